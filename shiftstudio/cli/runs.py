"""``shiftstudio runs``: the run library as a table (or JSON)."""

from __future__ import annotations

import json
import sys

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse

COMMAND = Command(
    name="runs",
    summary="List every run under the runs folder (and --folder DIR): state, steps, tokens, validation loss, time.",
    usage="runs [--json] [--sort KEY] [--desc] [--filter TEXT] [--folder DIR]",
    options=[
        Option("json", "print the runs as a JSON list", kind="bool", default=False),
        Option("sort", "sort by name, state, created (the default: newest first), corpus, params, steps, tokens, "
               "best_val, last_val or time_s", default="", metavar="KEY"),
        Option("desc", "sort in descending order", kind="bool", default=False),
        Option("filter", "only runs whose name, state, corpus, tokenizer, origin, notes or tags contain every word",
               default="", metavar="TEXT"),
        Option("folder", "list the runs in this folder instead of the runs folder", default="", metavar="DIR"),
    ],
)

COLUMNS = ("name", "state", "steps", "tokens", "best val", "last val", "time", "params", "corpus", "origin")


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, _, _ = parse(COMMAND, argv)
    from pathlib import Path

    from shiftstudio import paths
    from shiftstudio.cli import error
    from shiftstudio.core.runs.library import SORT_KEYS, filter_runs, list_runs, sort_runs

    if values["sort"] and values["sort"] not in SORT_KEYS:
        raise UsageError(f"--sort must be one of {', '.join(SORT_KEYS)}, got {values['sort']!r}")
    folder = Path(values["folder"]).expanduser() if values["folder"] else paths.runs_dir()
    if not folder.is_dir():
        return error(f"{folder} is not a folder", 1)
    entries = filter_runs(list_runs([folder]), values["filter"])
    if values["sort"]:
        entries = sort_runs(entries, values["sort"], values["desc"])
    if values["json"]:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"no runs in {folder}" + (f" matching {values['filter']!r}" if values["filter"] else ""))
        return 0
    print_table(entries, sys.stdout)
    return 0


def row_cells(e) -> list[str]:
    from shiftstudio.format import human_count, human_duration

    steps = f"{e.steps:,}/{e.max_iters:,}" if e.max_iters else f"{e.steps:,}"
    loss = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    state = e.state + (f" ({e.problem})" if e.state == "broken" else "")
    return [e.name, state, steps, human_count(e.tokens), loss(e.best_val), loss(e.last_val), human_duration(e.time_s),
            "–" if e.params is None else human_count(e.params), e.corpus, e.origin]


def print_table(entries, out) -> None:
    rows = [list(COLUMNS)] + [row_cells(e) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5, 6, 7}
    for r in rows:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.write("  ".join(cells).rstrip() + "\n")
