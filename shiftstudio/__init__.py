"""ShiftStudio: a desktop workbench for training small language models.

The package splits in two: :mod:`shiftstudio.core` (and the CLI, config and
paths modules) does all of the work without Qt; :mod:`shiftstudio.gui` is the
PySide6 front end over it.
"""

__version__ = "0.1.0"
