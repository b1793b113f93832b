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


def test_settings_linked_to_max_iters_follow_it_until_set_by_hand(qtbot) -> None:
    """lr_decay_iters = max_iters, eval_interval ≈ max_iters / 8 (a round number), warmup_iters ≤ max_iters / 10;
    the link buttons say so; typing a value unlinks a field, its button links it again."""
    from shiftstudio.gui.config_model import nice_interval
    from shiftstudio.presets import load_preset

    model = ConfigModel()
    schedule = {"max_iters": 2000, "lr_decay_iters": 2000, "eval_interval": 250, "warmup_iters": 100}  # all follow
    model.load(load_preset("cpu-tiny").updated(schedule), preset="cpu-tiny")
    form = ConfigForm(model, groups=form_groups())
    qtbot.addWidget(form)
    form.show()
    linked = {"lr_decay_iters", "eval_interval", "warmup_iters"}
    assert model.linked_keys() == linked
    for key in linked:
        button = form.link_buttons[key]
        assert button.objectName() == f"cfg_{key}_link" and button.isChecked()
        assert button.text().startswith("linked") and "max_iters" in button.text() and "follows max_iters" in button.toolTip()

    form.editors["max_iters"].setValue(300)  # as typed: the linked fields follow, in the model and on screen
    assert (model.value("lr_decay_iters"), model.value("eval_interval"), model.value("warmup_iters")) == (300, 50, 30)
    assert form.editors["lr_decay_iters"].value() == 300 and form.editors["eval_interval"].value() == 50
    assert model.is_valid and model.config.train.lr_decay_iters == 300
    form.editors["max_iters"].setValue(5000)
    assert (model.value("lr_decay_iters"), model.value("eval_interval"), model.value("warmup_iters")) == (5000, 500, 100)
    assert [nice_interval(x) for x in (0.4, 3.4, 37.5, 250, 625, 12_500)] == [1, 3, 50, 250, 500, 10_000]

    # a value typed by hand unlinks that field (only that one), and the button says so
    form.editors["lr_decay_iters"].setValue(4000)
    assert not model.is_linked("lr_decay_iters") and model.linked_keys() == {"eval_interval", "warmup_iters"}
    button = form.link_buttons["lr_decay_iters"]
    assert not button.isChecked() and button.text() == "link to max_iters" and "keeps its value" in button.toolTip()
    form.editors["max_iters"].setValue(800)
    assert (model.value("lr_decay_iters"), model.value("eval_interval"), model.value("warmup_iters")) == (4000, 100, 80)
    button.click()  # link it again: it takes the linked value at once
    assert model.is_linked("lr_decay_iters") and button.isChecked() and model.value("lr_decay_iters") == 800
    assert form.editors["lr_decay_iters"].value() == 800
    form.link_buttons["eval_interval"].click()  # unlink by the button: it stays where it is
    form.editors["max_iters"].setValue(1600)
    assert (model.value("lr_decay_iters"), model.value("eval_interval")) == (1600, 100)

    # loading a preset (or a run) links exactly the fields that follow their rule
    gpu = load_preset("gpu-small")  # max_iters 5000, lr_decay 5000, eval 250 (≠ 5000 / 8), warmup 100
    model.load(gpu, preset="gpu-small")
    assert model.linked_keys() == {"lr_decay_iters", "warmup_iters"}
    assert form.link_buttons["lr_decay_iters"].isChecked() and not form.link_buttons["eval_interval"].isChecked()
    # saved settings are values only: loading them back gives the same links
    again = ConfigModel()
    again.load_flat(model.values())
    assert again.linked_keys() == model.linked_keys()
    assert set(model.values()) == {f.name for _, f in iter_fields()}  # nothing but the config's own keys


def test_loading_values_with_max_iters_keeps_the_values_given(qtbot) -> None:
    """A load that sets max_iters and a linked field keeps the value given for it; the fields not given follow."""
    model = ConfigModel()  # the defaults: every link follows
    model.load_flat({"max_iters": 40, "eval_interval": 10})
    assert model.value("eval_interval") == 10 and not model.is_linked("eval_interval")
    assert model.value("lr_decay_iters") == 40 and model.value("warmup_iters") == 4
    assert model.is_linked("lr_decay_iters") and model.is_linked("warmup_iters")
