"""The stand-alone bundle's entry point (PyInstaller's script): the ``shiftstudio`` command."""

import multiprocessing
import sys

from shiftstudio.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # (a frozen app's child processes start through this executable)
    sys.exit(main())
