"""A small, strict command-line parser for ``--key value`` and ``--key=value``.

argparse cannot take every config key as an option without listing each one,
and nanoGPT users type ``--compile=False``; this parser knows the command's own
options plus, where a command trains, every config key from
:mod:`shiftstudio.config`. Unknown keys and bad values raise
:class:`UsageError` (the CLI prints one line and exits with code 2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shiftstudio import config as cfg


class UsageError(Exception):
    """Bad command line: printed as one line, exit code 2."""


@dataclass
class Option:
    name: str
    help: str
    kind: str = "str"  # str | int | float | bool | list
    default: Any = None
    metavar: str = ""


@dataclass
class Command:
    name: str
    summary: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: str = ""  # name of the positional list, "" = none allowed
    min_positionals: int = 0
    max_positionals: int | None = None
    config_keys: bool = False  # accept every config key as an option

    def help_text(self) -> str:
        lines = [f"usage: shiftstudio {self.usage}", "", self.summary, ""]
        if self.options:
            lines.append("options:")
            for opt in self.options:
                flag = f"--{opt.name}" + (f" {opt.metavar}" if opt.metavar else "")
                lines.append(f"  {flag:<28} {opt.help}")
        if self.config_keys:
            lines += ["", "settings (--key=value or --key value; booleans take true/false/1/0):"]
            for section, f in cfg.iter_fields():
                lines.append(f"  --{f.name:<26} [{section}] {f.metadata['help']} (default: {_show(f)})")
        return "\n".join(lines)


def _show(f: Any) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return repr(value)


def _coerce(opt: Option, raw: str) -> Any:
    try:
        if opt.kind == "int":
            return int(raw)
        if opt.kind == "float":
            return float(raw)
    except ValueError:
        raise UsageError(f"--{opt.name} expects a {'whole number' if opt.kind == 'int' else 'number'}, got {raw!r}") from None
    if opt.kind == "bool":
        word = cfg.parse_bool_word(raw)
        if word is not None:
            return word
        raise UsageError(f"--{opt.name} expects true or false, got {raw!r}")
    return raw


def checkpoint_options(ema_help: str) -> list[Option]:
    """``--checkpoint`` and ``--ema``: which weights of a run, for every command that reads one."""
    return [
        Option("checkpoint", "latest, best, or step-N", default="latest", metavar="NAME"),
        Option("ema", ema_help, kind="bool", default=False),
    ]


def help_asked(command: Command, argv: list[str]) -> bool:
    """Print ``command``'s help and return True when ``argv`` asks for it (-h, --help)."""
    if "-h" in argv or "--help" in argv:
        print(command.help_text())
        return True
    return False


def parse(command: Command, argv: list[str]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Split ``argv`` into (options, positionals, config overrides)."""
    options = {o.name: o for o in command.options}
    values: dict[str, Any] = {o.name: (list(o.default) if isinstance(o.default, list) else o.default) for o in command.options}
    positionals: list[str] = []
    overrides: dict[str, Any] = {}
    known_keys = cfg.field_index() if command.config_keys else {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            if arg == "--":
                positionals.extend(argv[i:])
                break
            positionals.append(arg)
            continue
        key, eq, inline = arg[2:].partition("=")
        key = key.replace("-", "_")
        opt = options.get(key)
        if opt is None and key in known_keys:
            kind = cfg.field_type(known_keys[key][1]).__name__
            opt = Option(key, "", kind={"list": "list"}.get(kind, "bool" if kind == "bool" else "str"))
            target = overrides
        elif opt is None:
            raise UsageError(f"unknown option --{key} (see 'shiftstudio {command.name} --help')")
        else:
            target = values
        if opt.kind == "list":
            items = [p for p in inline.split(",") if p] if eq else []
            while not eq and i < len(argv) and not argv[i].startswith("--"):
                items.append(argv[i])
                i += 1
            if not items:
                raise UsageError(f"--{key} needs at least one value")
            existing = target.get(key) or []
            target[key] = list(existing) + items
            continue
        if eq:
            raw = inline
        elif opt.kind == "bool":
            if i < len(argv) and cfg.parse_bool_word(argv[i]) is not None:
                raw = argv[i]
                i += 1
            else:
                raw = "true"
        else:
            if i >= len(argv):
                raise UsageError(f"--{key} needs a value")
            raw = argv[i]
            i += 1
        if target is overrides:
            try:
                overrides[key] = cfg.parse_value(key, raw)
            except cfg.ConfigError as exc:
                raise UsageError(str(exc)) from None
        else:
            values[key] = _coerce(opt, raw)
    if positionals and not command.positionals:
        raise UsageError(f"unexpected argument {positionals[0]!r} (see 'shiftstudio {command.name} --help')")
    if len(positionals) < command.min_positionals:
        raise UsageError(f"missing {command.positionals} (see 'shiftstudio {command.name} --help')")
    if command.max_positionals is not None and len(positionals) > command.max_positionals:
        raise UsageError(f"too many arguments: {' '.join(positionals)}")
    return values, positionals, overrides
