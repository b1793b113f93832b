"""``shiftstudio [gui] [RUN_DIR] [--corpus FILE ...]``: open the desktop app."""

from __future__ import annotations

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse

COMMAND = Command(
    name="gui",
    summary="Open the ShiftStudio desktop app, optionally on a run folder or a corpus.",
    usage="[gui] [RUN_DIR] [--corpus FILE ...]",
    options=[Option("corpus", "open the app with this corpus (files or folders)", kind="list", default=[], metavar="PATH...")],
    positionals="RUN_DIR",
    max_positionals=1,
)


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, positionals, _ = parse(COMMAND, argv)
    try:
        from shiftstudio.gui.app import launch
    except ImportError as exc:  # Qt missing or its system libraries absent
        raise UsageError(f"the desktop app cannot start: {exc}") from None
    return launch(run_dir=positionals[0] if positionals else None, corpus=values["corpus"])
