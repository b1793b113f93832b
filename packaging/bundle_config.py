"""What goes into the stand-alone bundle: data files, hidden imports, and what is left out.

Read by ``packaging/shiftstudio.spec`` (PyInstaller) and by the tests (that the
bundle carries every shipped resource). Plain Python, no PyInstaller import.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

APP_NAME = "ShiftStudio"  # the folder dist/ShiftStudio/ and its executable ShiftStudio(.exe)
ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources"
RESOURCES_DEST = "shiftstudio/resources"  # where paths.resources_dir() looks, beside the frozen package

# Python packages the app never imports at run time: test and build tools, optional extras of torch,
# other Qt bindings (pyqtgraph tries them), notebooks.
EXCLUDES = [
    "tkinter", "_tkinter", "pytest", "_pytest", "pytestqt", "IPython", "jupyter_client", "ipykernel", "notebook",
    "matplotlib", "pandas", "scipy", "sklearn", "PIL", "cv2",
    "transformers", "huggingface_hub", "hf_xet", "tensorboard", "tensorboardX", "tensorflow", "onnx", "onnxruntime",
    "importlinter", "grimp", "pyflakes", "PyInstaller", "setuptools", "pip", "wheel",
    "PyQt5", "PyQt6", "PySide2",
    "pyqtgraph.examples", "pyqtgraph.opengl", "pyqtgraph.jupyter",
    # Qt modules the app does not use (PySide6-Addons would bring the big ones: WebEngine, 3D, Multimedia…)
    "PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets", "PySide6.QtWebEngineQuick", "PySide6.QtWebChannel",
    "PySide6.QtWebSockets", "PySide6.QtWebView", "PySide6.Qt3DCore", "PySide6.Qt3DRender", "PySide6.Qt3DExtras",
    "PySide6.Qt3DInput", "PySide6.Qt3DLogic", "PySide6.Qt3DAnimation", "PySide6.QtMultimedia",
    "PySide6.QtMultimediaWidgets", "PySide6.QtSpatialAudio", "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuick3D",
    "PySide6.QtQuickWidgets", "PySide6.QtQuickControls2", "PySide6.QtCharts", "PySide6.QtDataVisualization",
    "PySide6.QtGraphs", "PySide6.QtBluetooth", "PySide6.QtNfc", "PySide6.QtPositioning", "PySide6.QtLocation",
    "PySide6.QtSensors", "PySide6.QtSerialPort", "PySide6.QtSerialBus", "PySide6.QtTextToSpeech", "PySide6.QtPdf",
    "PySide6.QtPdfWidgets", "PySide6.QtDesigner", "PySide6.QtHelp", "PySide6.QtSql", "PySide6.QtUiTools",
    "PySide6.QtScxml", "PySide6.QtStateMachine", "PySide6.QtRemoteObjects", "PySide6.QtHttpServer",
    "PySide6.QtNetworkAuth", "PySide6.QtConcurrent", "PySide6.QtDBus",
]

# The CLI imports its subcommands by name (cli/__init__.py SUBCOMMANDS) and the GUI its panes: the spec adds
# every shiftstudio submodule (collect_submodules) on top of these.
# torch.distributed.run: the window's torchrun jobs run it through the executable (app_entry.py).
HIDDEN_IMPORTS = ["shiftstudio.gui.self_test", "shiftstudio.desktop", "torch.distributed.run"]

# Collected by the hooks, never needed by the app (paths inside the bundle, fnmatch patterns): torch's C++
# headers, test binaries and build files; Qt plugins for embedded screens, SQL, QML, printing, TLS.
# KEEP wins over DROP: `import torch` looks for torch_shm_manager and fails without it.
KEEP = ["torch/bin/torch_shm_manager"]
DROP = [
    "torch/include/*", "torch/bin/*", "torch/test/*", "torch/share/*", "torch/lib/*test*.so*",
    "torch/lib/libaoti_custom_ops.so", "torch/lib/libbackend_with_compiler.so", "torch/lib/libjitbackend_test.so",
    "*/Qt/plugins/platforms/libqeglfs.so", "*/Qt/plugins/platforms/libqlinuxfb.so",
    "*/Qt/plugins/platforms/libqvnc.so", "*/Qt/plugins/platforms/libqvkkhrdisplay.so",
    "*/Qt/plugins/platforms/libqminimalegl.so", "*/Qt/plugins/egldeviceintegrations/*",
    "*/Qt/plugins/sqldrivers/*", "*/Qt/plugins/qmltooling/*", "*/Qt/plugins/designer/*",
    "*/Qt/plugins/printsupport/*", "*/Qt/plugins/tls/*", "*/Qt/plugins/networkinformation/*",
    "*/Qt/qml/*",
]


# Shared libraries whose symbol tables build_app.py strips after the build (Linux, where `strip` exists): the
# dynamic symbols stay, so they load as before; libtorch_cpu.so loses about 90 MB. Only torch's own libraries:
# stripping libraries that auditwheel patched (numpy.libs and the like) can break them.
STRIP = ["torch/lib/libtorch_cpu.so", "torch/lib/libtorch_python.so"]


def keep(dest: str) -> bool:
    """Is the bundle file ``dest`` (a path inside the bundle, '/'-separated) kept?"""
    dest = dest.replace("\\", "/")
    if any(fnmatch.fnmatch(dest, pattern) for pattern in KEEP):
        return True
    return not any(fnmatch.fnmatch(dest, pattern) for pattern in DROP)


def resource_files() -> list[Path]:
    """Every shipped resource file (what the wheel carries as ``shiftstudio.resources``)."""
    return sorted(p for p in RESOURCES.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc"))


def datas() -> list[tuple[str, str]]:
    """PyInstaller ``datas``: (source file, destination folder) for each resource."""
    return [(str(p), str(Path(RESOURCES_DEST) / p.parent.relative_to(RESOURCES)).replace("\\", "/"))
            for p in resource_files()]
