"""The desktop app: windows, panes, plots and the worker that runs training.

Everything here may import PySide6 (and, lazily, pyqtgraph); nothing in
:mod:`shiftstudio.core` may import anything from here.
"""

from shiftstudio.gui import qtcompat as _qtcompat

_qtcompat.apply()
