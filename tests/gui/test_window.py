"""The real main window: startup, panes, menus, shortcuts, bad input, persistence."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QPlainTextEdit, QSlider, QSpinBox, QTabBar

from shiftstudio.presets import load_preset
from tests.gui.conftest import TINY, expected_device_text


def test_window_is_painted_before_torch_and_pyqtgraph_are_imported(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from PySide6.QtCore import QEvent, QObject, QTimer\n"
        "from shiftstudio.gui.app import application, create_window\n"
        "app = application()\n"
        "t = time.perf_counter()\n"
        "seen = {}\n"
        "class Spy(QObject):\n"
        "    def eventFilter(self, obj, ev):\n"
        "        if ev.type() == QEvent.Paint and obj.objectName() == 'main_window' and not seen:\n"
        "            seen['at'] = time.perf_counter() - t\n"
        "            seen['heavy'] = sorted(m for m in ('torch', 'pyqtgraph') if m in sys.modules)\n"
        "        return False\n"
        "spy = Spy(); app.installEventFilter(spy)\n"
        "w = create_window()\n"
        "w.built.connect(app.quit)\n"
        "QTimer.singleShot(60_000, app.quit)\n"
        "app.exec()\n"
        "print('RESULT', seen.get('heavy'), bool(w.panes), round(seen.get('at', -1), 3))\n"
        "w.ctx.session.shutdown()\n"
    )
    env = {**__import__("os").environ, "SHIFTSTUDIO_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), "")
    assert line.startswith("RESULT [] True"), out.stdout + out.stderr  # painted first, then the panes were built
    print(line)


def test_every_clickable_control_has_a_name_and_a_tooltip(window) -> None:
    missing = []
    for cls in (QAbstractButton, QComboBox, QSpinBox, QLineEdit, QSlider):
        for w in window.findChildren(cls):
            if w.parent() is not None and isinstance(w.parent(), (QComboBox, QSpinBox, QTabBar)):
                continue  # Qt's own parts: the line edit inside a combo or spin box, tab scroll buttons
            if type(w).__name__ in ("QDockWidgetTitleButton", "QTabBarCloseButton", "QToolBarExtension"):
                continue
            if w.objectName().startswith("qt_") or not w.isVisibleTo(window) and not w.objectName():
                continue
            if not w.objectName() or not w.toolTip():
                missing.append(f"{type(w).__name__}({w.objectName()!r}, {w.text() if hasattr(w, 'text') else ''!r})")
    assert not missing, missing


def test_panes_menus_and_shortcuts(window) -> None:
    assert set(window.panes) >= {"corpus", "tokenizer", "model", "train"}
    assert set(window.docks) == {"corpus", "tokenizer", "model", "inspector", "generate"}
    from shiftstudio.gui.panes.generate import GeneratePane
    from shiftstudio.gui.panes.inspector import InspectorPane
    from shiftstudio.gui.panes.model import ModelPane
    from shiftstudio.gui.panes.train import TrainPane

    assert isinstance(window.panes["inspector"], InspectorPane) and window.panes["inspector"].runs is window.ctx.runs
    assert isinstance(window.panes["generate"], GeneratePane) and window.panes["generate"].runs is window.ctx.runs
    assert window.train_pane is window.panes["train"] and isinstance(window.train_pane, TrainPane)
    assert window.model_pane is window.panes["model"] and isinstance(window.model_pane, ModelPane)
    runs = window.ctx.runs
    actions = (runs.start_action, runs.new_run_action, runs.pause_action, runs.stop_action, runs.checkpoint_action)
    shortcuts = {a.objectName(): a.shortcut().toString() for a in actions}
    assert shortcuts == {"train_start_action": "F5", "train_new_run_action": "Ctrl+F5", "train_pause_action": "F6",
                         "train_stop_action": "Shift+F5", "train_checkpoint_action": "Ctrl+S"}
    assert all(a.toolTip() for a in actions)
    # what F5 does is said where it is read: the button's tooltip, the menu's status tip, the status bar
    assert runs.start_action.toolTip() == runs.start_action.statusTip() == "Start a new training run with these settings (F5)."
    assert window.panes["train"].start_button.toolTip() == runs.start_action.toolTip()
    assert window.status_bar.plan_label.text() == "F5 starts a new run"
    assert window.open_corpus_action.shortcut().toString() == "Ctrl+O"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert menus == ["File", "Train", "View", "Help"]
    assert runs.start_action.isEnabled()
    assert not runs.pause_action.isEnabled() and not runs.stop_action.isEnabled()


def test_the_window_fits_a_laptop_screen(window, qtbot) -> None:
    """Every pane built: the window can still be made as small as a 1366x768 screen's work area, and the
    panes that cannot fit their dock scroll instead of forcing the window larger."""
    hint = window.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 700, hint
    window.resize(1280, 700)
    qtbot.waitUntil(lambda: window.height() <= 720, timeout=5000)
    for key, dock in window.docks.items():
        scroll = dock.widget()
        assert scroll.widget() is window.panes[key]  # the pane sits in a scroll area in its dock


def test_status_bar_and_corpus_pane_show_the_corpus(window, tiny_corpus: Path, qtbot) -> None:
    pane = window.panes["corpus"]
    assert pane.source_label.text() == tiny_corpus.name
    assert pane.stat_labels["files"].text() == "1"
    assert pane.files_model.rowCount() == 1
    assert pane.preview.toPlainText().startswith("First Citizen")
    assert "Validation" in pane.split_label.text()
    with qtbot.waitSignal(window.ctx.session.device_probed, timeout=60_000):
        window.ctx.session.probe_device()
    import torch

    status = window.status_bar
    assert status.device_label.text() == window.ctx.session.device.text == expected_device_text(torch.get_num_threads())
    size = r"\d+(\.\d)? (B|KB|MB|GB)"
    gpu = f" · GPU {size}" if window.ctx.session.device.kind == "cuda" else ""  # the GPU's too, on a CUDA device
    # (refreshed every second: the GPU part comes with the first refresh after the probe)
    qtbot.waitUntil(lambda: re.fullmatch(f"Memory: {size}{gpu}", status.memory_label.text()) is not None, timeout=3000)


def test_a_binary_file_shows_a_message_and_the_app_stays_usable(window, tmp_path: Path, tiny_corpus: Path, qtbot) -> None:
    binary = tmp_path / "picture.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
    session = window.ctx.session
    with qtbot.waitSignal(session.corpus_failed, timeout=10_000):
        window.open_corpus([str(binary)])
    bar = window.panes["corpus"].messages
    assert bar.level() == "error" and "PNG" in bar.text()
    assert session.corpus.paths == [str(tiny_corpus)]  # the previous corpus is still there
    good = tmp_path / "ok.txt"
    good.write_text("hello world\n" * 200, encoding="utf-8")
    with qtbot.waitSignal(session.corpus_opened, timeout=10_000):
        window.open_corpus([str(good)])
    assert window.panes["corpus"].stat_labels["lines"].text() == "200"


def test_invalid_config_disables_train_with_the_reason(window) -> None:
    config = window.ctx.config
    model_pane = window.panes["model"]
    model_pane.form.editors["n_head"].setValue(3)  # 32 % 3 != 0
    runs = window.ctx.runs
    assert not runs.start_action.isEnabled()
    reason = window.panes["train"].reason_label.text()
    assert "divisible" in reason
    assert model_pane.messages.level() == "error" and "divisible" in model_pane.messages.text()
    assert {"n_head", "n_embd"} <= model_pane.form.invalid_keys()
    assert runs.start() is False
    model_pane.form.editors["n_head"].setValue(4)
    assert config.is_valid and runs.start_action.isEnabled()
    assert window.panes["train"].reason_label.text() == ""


def test_presets_and_live_figures(window, qtbot) -> None:
    pane = window.panes["model"]
    names = [pane.preset_combo.itemText(i) for i in range(pane.preset_combo.count())]
    assert {"cpu-tiny", "gpu-small", "gpt2-124m"} <= set(names)
    pane.apply_preset("gpt2-124m")
    config = window.ctx.config
    assert config.value("n_layer") == 12 and config.value("corpus") == [str(window.ctx.session.corpus.paths[0])]
    # the live figures are those of the real model: a GPT built (on the meta device) for the shown vocabulary
    import torch

    from shiftstudio.core.model.gpt import GPT
    from shiftstudio.format import human_count

    vocab_text = pane.figure_labels["vocab"].text()
    vocab = int(vocab_text.split()[0].replace(",", ""))
    with torch.device("meta"):
        real = GPT(config.config.model, vocab)
    assert pane.figure_labels["params"].text() == human_count(real.num_params())
    assert pane.figure_labels["non_embedding"].text() == human_count(real.num_params(non_embedding=True))
    assert pane.figure_labels["tokens_per_step"].text() == f"{12 * 40 * 1024:,}"
    assert pane.figure_labels["heads"].text() == "none (shift = 1)"
    pane.form.editors["shift"].setValue(4)  # three extra heads of 768 x 768 (+ a norm each, residual)
    with torch.device("meta"):
        extra = sum(p.numel() for p in GPT(config.config.model, vocab).shift_heads.parameters())
    assert pane.figure_labels["heads"].text().startswith(f"residual {human_count(extra)} (linear ")
    assert human_count(real.num_params() + extra) == pane.figure_labels["params"].text()
    pane.form.editors["head_kind"].setCurrentIndex(pane.form.editors["head_kind"].findText("block"))
    assert config.value("head_kind") == "block" and pane.figure_labels["heads"].text().startswith("block ")
    pane.form.editors["shift"].setValue(1)
    saved = pane.save_as_preset("mine")
    assert Path(saved).is_file() and not list(Path(saved).parent.glob("*.tmp"))  # written whole, nothing left over
    mine = load_preset("mine")
    assert (mine.model, mine.train) == (config.config.model, config.config.train)
    assert pane.preset_combo.currentText() == "mine"


def test_tokenizer_pane_builds_char_and_shows_tokens(window, qtbot) -> None:
    session = window.ctx.session
    qtbot.waitUntil(lambda: session.tokenizer is not None, timeout=20_000)
    pane = window.panes["tokenizer"]
    assert "char" in pane.vocab_label.text()
    assert float(pane.ratio_label.text()) == 1.0
    pane.try_edit.setPlainText("To be")
    pieces = pane.token_pieces()
    assert [text for _, text in pieces] == list("To be")
    qtbot.waitUntil(lambda: "5 characters → 5 tokens" in pane.count_label.text(), timeout=2000)
    # a darker palette (a theme change) re-tints the tokens
    from PySide6.QtGui import QColor, QPalette

    from shiftstudio.gui.panes.tokenizer import DARK_COLOURS, LIGHT_COLOURS

    assert LIGHT_COLOURS[0] in pane.tokens_view.toHtml() and DARK_COLOURS[0] not in pane.tokens_view.toHtml()
    dark = QPalette(pane.palette())
    dark.setColor(QPalette.ColorRole.Window, QColor(30, 30, 30))
    pane.setPalette(dark)
    assert DARK_COLOURS[0] in pane.tokens_view.toHtml() and LIGHT_COLOURS[0] not in pane.tokens_view.toHtml()
    pane.setPalette(QPalette())
    # BPE: train it and see compression above one character per token
    window.ctx.config.load_flat({"tokenizer": "bpe", "vocab_size": 300})
    assert pane.bpe_radio.isChecked()
    with qtbot.waitSignal(session.tokenizer_changed, timeout=30_000, check_params_cb=lambda info: info is not None):
        pane.train_button.click()
    assert float(pane.ratio_label.text()) > 1.0
    longest = session.tokenizer.longest
    assert len(longest[0]) > 1  # merges: tokens of several characters
    assert pane.longest_label.text() == "  ".join(f"[{repr(t)[1:-1]}]" for t in longest[:16])


def test_drop_a_file_opens_it_as_corpus(window, tmp_path: Path, qtbot) -> None:
    dropped = tmp_path / "dropped.md"
    dropped.write_text("# Title\n\nSome words to train on.\n" * 50, encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(dropped))])
    event = QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(window.ctx.session.corpus_opened, timeout=10_000):
        window.dropEvent(event)
    assert window.panes["corpus"].source_label.text() == "dropped.md"


def test_settings_persist_between_starts(window, qtbot, tiny_corpus: Path) -> None:
    from shiftstudio import paths
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    window.panes["train"].curves.set_smoothing(0.85)
    window.ctx.config.set_value("n_layer", 3)
    window.close()
    data = json.loads((paths.config_dir() / "gui.json").read_text())
    assert data["last_corpus"] == [str(tiny_corpus)]
    assert data["last_config"]["n_layer"] == 3
    again = MainWindow(Settings())
    qtbot.addWidget(again)
    again.show()
    again.build()
    assert again.ctx.config.value("n_layer") == 3
    assert again.ctx.config.value("batch_size") == TINY["batch_size"]
    assert abs(again.panes["train"].curves.smoothing - 0.85) < 1e-9
    with qtbot.waitSignal(again.ctx.session.corpus_opened, timeout=20_000):
        again.start()
    assert again.ctx.session.corpus.paths == [str(tiny_corpus)]
    again.ctx.session.shutdown()


def test_message_bar_details_expand(qtbot) -> None:
    from shiftstudio.gui.widgets.message_bar import MessageBar

    bar = MessageBar(name="demo_bar")
    qtbot.addWidget(bar)
    bar.show_message("Something broke", "error", "Traceback: ...")
    bar.show()
    assert bar.text() == "Something broke"
    details = bar.findChild(QPlainTextEdit, "demo_bar_detail_text")
    assert details.isHidden()
    bar.findChild(QAbstractButton, "demo_bar_details").click()
    assert not details.isHidden()
