"""``shiftstudio compare``: runs side by side, the settings that differ and the figures each reached."""

from __future__ import annotations

import json

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse

COMMAND = Command(
    name="compare",
    summary="Compare runs: the settings in which they differ, then each run's best and last validation loss "
    "(head 1), steps done of those planned, tokens seen and wall time, one column per run.",
    usage="compare RUN_DIR RUN_DIR... [--json]",
    options=[Option("json", "print the comparison as JSON", kind="bool", default=False)],
    positionals="RUN_DIR",
)


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, positionals, _ = parse(COMMAND, argv)
    if len(positionals) < 2:
        raise UsageError(f"compare needs two runs or more, got {len(positionals)} (see 'shiftstudio compare --help')")

    from shiftstudio.cli import error
    from shiftstudio.core.errors import RunError
    from shiftstudio.core.runs.compare import compare_runs

    try:
        comparison = compare_runs(positionals)
    except (RunError, OSError) as exc:
        return error(str(exc), 1)
    if values["json"]:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        print(format_table(comparison.labels, comparison.rows()))
    return 0


def format_table(labels: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """One column per run, left-aligned and padded to its widest cell; the row names on the left."""
    table = [["", *labels], *([name, *cells] for name, cells in rows)]
    widths = [max(len(line[col]) for line in table) for col in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)
