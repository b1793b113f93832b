"""The ``shiftstudio`` command.

With no arguments (or a run folder, or ``--corpus FILE``) it opens the desktop
app; with a subcommand it works headless. The GUI is imported only when it is
asked for, so the headless commands never load Qt.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from shiftstudio import __version__
from shiftstudio.cli.options import UsageError

# name -> (module, one-line summary). Each module has COMMAND and run(argv) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("shiftstudio.cli.prepare", "tokenize a corpus into train.bin / val.bin"),
    "train": ("shiftstudio.cli.train", "train a model headless"),
    "resume": ("shiftstudio.cli.train", "continue a run where it stopped"),
    "info": ("shiftstudio.cli.train", "show a run's config, size, steps and best val loss"),
    "generate": ("shiftstudio.cli.generate", "sample text from a trained run"),
    "compare": ("shiftstudio.cli.compare", "compare runs: the settings that differ, losses, steps, time"),
    "runs": ("shiftstudio.cli.runs", "list the runs: state, steps, validation loss, time"),
    "export": ("shiftstudio.cli.export", "export a run's model (Hugging Face layout) or metrics (TensorBoard, CSV)"),
    "gui": ("shiftstudio.cli.gui", "open the desktop app (the default)"),
}

USAGE = """usage: shiftstudio [RUN_DIR | --corpus FILE ...]
       shiftstudio COMMAND [options]     (shiftstudio COMMAND --help for more)
       shiftstudio --self-test           (train a tiny model in the window offscreen, report, exit)
       shiftstudio --install-desktop | --uninstall-desktop   (the Linux menu entry and icons, for this user)

ShiftStudio {version}: a desktop workbench for training small language models.

commands:
{commands}
"""


def _usage() -> str:
    commands = "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in SUBCOMMANDS.items())
    return USAGE.format(version=__version__, commands=commands)


def error(message: str, code: int = 2) -> int:
    """Print a one-line error to stderr and return the exit code."""
    first = " ".join(str(message).split("\n")[0].split())
    print(f"shiftstudio: error: {first}", file=sys.stderr)
    return code


def user_message(exc: BaseException) -> str:
    """An expected error's line, with what to do about it from the command line where that differs."""
    from shiftstudio.core.errors import NotUtf8Error

    if isinstance(exc, NotUtf8Error):
        return f"{exc}; convert it to UTF-8 or read it with --errors replace"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("SHIFTSTUDIO_LOG", "WARNING").upper(), format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(f"shiftstudio {__version__}")
        return 0
    if argv and argv[0] in ("--install-desktop", "--uninstall-desktop"):  # the Linux menu entry (no Qt)
        from shiftstudio import desktop

        return desktop.main(argv)
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else "gui"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.run(name, rest) or 0)
    except UsageError as exc:
        return error(str(exc), 2)
    except KeyboardInterrupt:
        return error("interrupted", 130)
    except BrokenPipeError:  # `shiftstudio info RUN | head` closed the pipe: not an error
        try:
            sys.stdout = open(os.devnull, "w")  # nothing more can reach the reader; Python's exit flush stays quiet
        except OSError:
            pass
        return 0
