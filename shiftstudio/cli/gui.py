"""``shiftstudio [gui] [RUN_DIR] [--corpus FILE ...]``: open the desktop app.

``shiftstudio [gui] --self-test`` opens it offscreen, trains a tiny model, samples a line, prints a report and
exits (see :mod:`shiftstudio.gui.self_test`).
"""

from __future__ import annotations

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse

COMMAND = Command(
    name="gui",
    summary="Open the ShiftStudio desktop app, optionally on a run folder or a corpus.",
    usage="[gui] [RUN_DIR] [--corpus FILE ...] | [gui] --self-test [--corpus FILE ...] [--timeout S] [--on-screen]",
    options=[
        Option("corpus", "open the app with this corpus (files or folders)", kind="list", default=[], metavar="PATH..."),
        Option("self_test", "check the app works: open the window offscreen, train a tiny model on the sample corpus "
               "(or --corpus) for a few steps, generate a line, print a report, exit 0 (1 and the reason on failure); "
               "nothing is written outside a temporary folder", kind="bool", default=False),
        Option("timeout", "with --self-test: fail after this many seconds (default 300)", kind="float", default=None, metavar="S"),
        Option("on_screen", "with --self-test: show the window on the display instead of offscreen", kind="bool", default=False),
    ],
    positionals="RUN_DIR",
    max_positionals=1,
)


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, positionals, _ = parse(COMMAND, argv)
    if not values["self_test"] and (values["timeout"] is not None or values["on_screen"]):
        raise UsageError("--timeout and --on-screen go with --self-test")
    if values["self_test"] and positionals:
        raise UsageError("--self-test opens no run folder (it trains a new run in a temporary folder)")
    if values["timeout"] is not None and values["timeout"] <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    try:
        from shiftstudio.gui.app import launch
    except ImportError as exc:  # Qt missing or its system libraries absent
        raise UsageError(f"the desktop app cannot start: {exc}") from None
    if values["self_test"]:
        from shiftstudio.gui.self_test import DEFAULT_TIMEOUT_S, run_self_test

        return run_self_test(values["corpus"], values["timeout"] or DEFAULT_TIMEOUT_S, on_screen=values["on_screen"])
    return launch(run_dir=positionals[0] if positionals else None, corpus=values["corpus"])
