"""File → Export model…: the dialog exports a trained run to a folder the real ``transformers`` loads, and is
disabled with its reason when the run cannot be exported."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QProgressBar, QPushButton
from transformers import AutoModelForCausalLM, AutoTokenizer

from shiftstudio.config import RunConfig
from shiftstudio.core.runs.folder import prepare_and_create
from shiftstudio.core.runs.layout import EMA_FILE, RunLayout
from shiftstudio.core.runs.loading import load_model
from shiftstudio.gui.export_dialog import NO_RUN, ExportDialog


def controls(dialog: ExportDialog) -> dict:
    find = dialog.findChild
    return {
        "format": find(QComboBox, "export_format_combo"), "checkpoint": find(QComboBox, "export_checkpoint_combo"),
        "ema": find(QCheckBox, "export_ema_check"), "out": find(QLineEdit, "export_out_edit"),
        "browse": find(QPushButton, "export_browse_button"), "export": find(QPushButton, "export_button"),
        "reason": find(QLabel, "export_reason_label"), "progress": find(QProgressBar, "export_progress"),
    }


def test_export_dialog_writes_a_folder_transformers_loads(qtbot, tiny_run: Path, tmp_path: Path) -> None:
    dialog = ExportDialog(tiny_run)
    qtbot.addWidget(dialog)
    dialog.show()
    c = controls(dialog)
    assert all(c.values()), [k for k, v in c.items() if v is None]
    assert c["format"].currentData() == "hf" and c["format"].count() == 1
    steps = [c["checkpoint"].itemData(i) for i in range(c["checkpoint"].count())]
    assert steps[0] == "latest" and "best" in steps and "step-4" in steps and "step-2" in steps
    assert c["out"].text() == str(tiny_run.parent / f"{tiny_run.name}-hf")  # a suggestion beside the run
    assert not c["ema"].isEnabled() and "no EMA" in c["ema"].toolTip()  # the run trained without EMA
    assert "GPT-2" in c["reason"].text()

    out_dir = tmp_path / "exported"
    c["out"].setText(str(out_dir))
    c["checkpoint"].setCurrentIndex(steps.index("step-2"))
    assert c["export"].isEnabled()
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as blocker:
        qtbot.mouseClick(c["export"], Qt.LeftButton)
        assert c["progress"].isVisible() and not c["export"].isEnabled()  # busy while the worker writes
    result = blocker.args[0]
    qtbot.waitUntil(lambda: dialog.task is None, timeout=10_000)
    assert not c["progress"].isVisible() and c["export"].isEnabled()
    assert f"exported to {out_dir}" in c["reason"].text()
    assert result.out_dir == out_dir and result.layout == "gpt2"

    transformers.utils.logging.disable_progress_bar()
    hf, info = AutoModelForCausalLM.from_pretrained(str(out_dir), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    hf_tok = AutoTokenizer.from_pretrained(str(out_dir))
    ours, tokenizer, _ = load_model(tiny_run, "step-2")
    text = "First Citizen:"
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text)
    x = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x).logits[:, 0], atol=1e-4, rtol=1e-4)

    # a folder with other things in it: the failure is shown, nothing is written
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    c["out"].setText(str(busy))
    with qtbot.waitSignal(dialog.export_failed, timeout=30_000) as failed:
        dialog.start_export()
    assert "not empty" in failed.args[0]
    qtbot.waitUntil(lambda: dialog.task is None, timeout=10_000)
    assert "Export failed" in c["reason"].text() and "not empty" in c["reason"].text()
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_ema_checkbox_follows_the_checkpoint(qtbot, tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    step2 = RunLayout(run).checkpoint_dir(2)
    (step2 / EMA_FILE).write_bytes(b"")  # only its presence matters to the checkbox
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    c = controls(dialog)
    steps = [c["checkpoint"].itemData(i) for i in range(c["checkpoint"].count())]
    c["checkpoint"].setCurrentIndex(steps.index("step-2"))
    assert c["ema"].isEnabled()
    c["ema"].setChecked(True)
    c["checkpoint"].setCurrentIndex(steps.index("step-4"))
    assert not c["ema"].isEnabled() and not c["ema"].isChecked()


def test_disabled_with_a_reason(qtbot, tmp_path: Path, small_corpus: Path) -> None:
    base = {"corpus": [str(small_corpus)], "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "device": "cpu"}
    cases = {
        "no checkpoints": (prepare_and_create(RunConfig().updated(base), out_dir=tmp_path / "fresh"), "no checkpoints yet"),
        "rmsnorm": (prepare_and_create(RunConfig().updated({**base, "norm": "rmsnorm"}), out_dir=tmp_path / "rms"),
                    "norm = rmsnorm has no Hugging Face"),
        "not a run": (tmp_path, str(tmp_path)),
        "no run": (None, NO_RUN),
    }
    for name, (run_dir, reason) in cases.items():
        dialog = ExportDialog(run_dir)
        qtbot.addWidget(dialog)
        c = controls(dialog)
        assert reason in c["reason"].text(), (name, c["reason"].text())
        for key in ("format", "checkpoint", "ema", "out", "browse", "export"):
            assert not c[key].isEnabled(), (name, key)
        assert reason in c["export"].toolTip()
        dialog.start_export()  # does nothing
        assert dialog.task is None


def test_file_menu_opens_the_dialog(qtbot, window) -> None:
    from PySide6.QtGui import QAction

    action = window.findChild(QAction, "export_model_action")
    assert action is not None and action in window.menuBar().actions()[0].menu().actions()
    action.trigger()
    dialog = window.findChild(ExportDialog, "export_dialog")
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    assert controls(dialog)["reason"].text() == NO_RUN  # the window has a corpus open, but no run yet
    dialog.reject()
