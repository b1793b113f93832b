"""The stand-alone bundle's entry point (PyInstaller's script): the ``shiftstudio`` command.

The bundle's executable is also the Python that several-process training needs. The window starts a torchrun job
as ``EXE -m torch.distributed.run … -m shiftstudio resume RUN`` (``sys.executable`` is this executable), and
torchrun starts each rank as ``EXE -u -m shiftstudio resume RUN``: those two module runs are served here as
``python -m`` would serve them. Any other ``-m`` is refused: the bundle is not a general Python.
"""

import multiprocessing
import runpy
import sys

MODULES = ("torch.distributed.run", "shiftstudio")  # what `EXE -m MODULE` may run
PYTHON_FLAGS = ("-u", "-B", "-s", "-E")  # interpreter flags torchrun or a launcher may put first


def module_run(argv: list[str]) -> tuple[str, list[str], bool] | None:
    """``(module, its argv, unbuffered)`` when ``argv`` (without the program) asks for ``-m MODULE``; else None."""
    args, unbuffered = list(argv), False
    while args and args[0] in PYTHON_FLAGS:
        unbuffered = unbuffered or args[0] == "-u"
        args.pop(0)
    if len(args) < 2 or args[0] != "-m":
        return None
    return args[1], args[2:], unbuffered


def run_module(module: str, args: list[str], unbuffered: bool) -> int:
    if module not in MODULES:
        print(f"shiftstudio: error: this executable runs only {' and '.join(MODULES)} with -m, not {module}",
              file=sys.stderr)
        return 2
    if unbuffered:  # what -u means: each rank's lines reach torchrun's log as they are printed
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)  # its sys.exit() ends the process as usual
    return 0


if __name__ == "__main__":
    multiprocessing.freeze_support()  # (a frozen app's child processes start through this executable)
    request = module_run(sys.argv[1:])
    if request is not None:
        sys.exit(run_module(*request))
    from shiftstudio.cli import main

    sys.exit(main())
