"""The generated settings form: editors from metadata, tooltips from help, live validation."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from shiftstudio.config import help_text, iter_fields
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.panes.model import form_groups
from shiftstudio.gui.widgets.config_form import ConfigForm, FloatEdit


def test_form_has_an_editor_with_help_for_every_model_and_train_field(qtbot) -> None:
    model = ConfigModel()
    form = ConfigForm(model, groups=form_groups())
    qtbot.addWidget(form)
    expected = {f.name for section, f in iter_fields() if section in ("model", "train")}
    assert set(form.editors) == expected
    for key, editor in form.editors.items():
        assert editor.objectName() == f"cfg_{key}"
        assert help_text(key) in editor.toolTip()
    assert isinstance(form.editors["n_layer"], QSpinBox)
    assert isinstance(form.editors["dropout"], QDoubleSpinBox)
    assert isinstance(form.editors["learning_rate"], FloatEdit)
    assert isinstance(form.editors["bias"], QCheckBox)
    assert isinstance(form.editors["pos"], QComboBox)
    assert form.editors["n_layer"].maximum() == 256


def test_invalid_combination_marks_fields_and_recovers(qtbot) -> None:
    model = ConfigModel()
    form = ConfigForm(model, keys=["n_head", "n_embd", "n_layer"])
    qtbot.addWidget(form)
    with qtbot.waitSignal(model.validity_changed):
        form.editors["n_head"].setValue(5)  # 128 % 5 != 0
    assert not model.is_valid
    assert "divisible" in model.error
    assert form.invalid_keys() == {"n_head", "n_embd"}
    assert "divisible" in form.editors["n_head"].toolTip()
    form.editors["n_head"].setValue(8)
    assert model.is_valid
    assert form.invalid_keys() == set()
    assert model.config.model.n_head == 8


def test_float_field_accepts_scientific_notation_and_flags_garbage(qtbot) -> None:
    model = ConfigModel()
    form = ConfigForm(model, keys=["learning_rate", "min_lr"])
    qtbot.addWidget(form)
    edit = form.editors["learning_rate"]
    edit.clear()
    qtbot.keyClicks(edit, "3e-4")
    assert model.is_valid and model.config.train.learning_rate == 3e-4
    edit.clear()
    qtbot.keyClicks(edit, "fast")
    assert not model.is_valid and "learning_rate" in model.error
    assert "learning_rate" in form.invalid_keys()
    edit.clear()
    qtbot.keyClicks(edit, "1e-5")  # now below min_lr: a cross-field error
    assert not model.is_valid and "min_lr" in model.error
    assert form.invalid_keys() == {"learning_rate", "min_lr"}


def test_loading_values_updates_the_editors(qtbot) -> None:
    model = ConfigModel()
    form = ConfigForm(model, keys=["n_layer", "compile", "learning_rate", "device"])
    qtbot.addWidget(form)
    model.load_flat({"n_layer": 7, "compile": True, "learning_rate": 0.02, "device": "cuda:1", "bogus": 3})
    assert form.editors["n_layer"].value() == 7
    assert form.editors["compile"].isChecked()
    assert float(form.editors["learning_rate"].text()) == 0.02
    assert form.editors["device"].currentText() == "cuda:1"
    assert model.is_valid
