"""The generated settings form: editors from metadata, tooltips from help, live validation."""

from __future__ import annotations

import pytest
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


def test_tooltip_range_and_out_of_range_error_say_the_same(qtbot) -> None:
    """The range a tooltip shows is the one the error for a value outside it names, in the CLI's words."""
    from shiftstudio.config import DataConfig, field_problem
    from shiftstudio.core.errors import ConfigError

    model = ConfigModel()
    form = ConfigForm(model, keys=["val_fraction", "learning_rate", "n_layer"])
    qtbot.addWidget(form)
    assert "Range: above 0 … 0.5" in form.editors["val_fraction"].toolTip()
    assert form.editors["val_fraction"].minimum() == 0.0 and form.editors["val_fraction"].maximum() == 0.5
    model.set_value("val_fraction", 0.6)  # (the spin box stops at its maximum: set it as a loaded value would)
    assert model.error == "val_fraction must be above 0 and at most 0.5, got 0.6"
    assert form.invalid_keys() == {"val_fraction"}
    tip = form.editors["val_fraction"].toolTip()
    assert model.error in tip and "Range: above 0 … 0.5" in tip  # the error above the range it breaks
    with pytest.raises(ConfigError) as refused:  # the CLI and the config files get the same sentence
        DataConfig(val_fraction=0.6)
    assert str(refused.value) == model.error
    model.set_value("val_fraction", 0.2)
    assert model.is_valid and form.invalid_keys() == set()

    # a typed number: the float field shows its range, and a value past it is refused with that range
    edit = form.editors["learning_rate"]
    assert "Range: above 0 … 10" in edit.toolTip()
    edit.clear()
    qtbot.keyClicks(edit, "12")
    assert model.error == field_problem("learning_rate", 12.0) == "learning_rate must be above 0 and at most 10, got 12"
    assert form.invalid_keys() == {"learning_rate"}
    assert model.config.train.learning_rate == 1.0  # the last valid value: "1", on the way to "12"

    # an integer field: its spin box has the bounds the tooltip and the error name
    spin = form.editors["n_layer"]
    assert f"Range: {spin.minimum()} … {spin.maximum()}" in spin.toolTip()
    too_many = spin.maximum() + 1
    assert field_problem("n_layer", too_many) == f"n_layer must be between {spin.minimum()} and {spin.maximum()}, got {too_many}"
