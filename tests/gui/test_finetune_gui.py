"""Fine-tuning in the window, on a tiny real GPT-2 folder made by ``transformers``: "Start from" reads the source
and locks what it decides, fine-tuning defaults, LoRA and its figures, a bad folder changes nothing, the tokenizer
pane uses the source's tokenizer, the playground samples from the folder, and a run started from the window trains
and records its origin."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from shiftstudio.format import human_count
from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.model import FULL_FT_LR, LORA_LR, ModelPane
from shiftstudio.gui.panes.tokenizer import TokenizerPane
from shiftstudio.gui.widgets.source_picker import HF, NEW

ARCHITECTURE = {"n_layer": 2, "n_head": 2, "n_embd": 32, "bias": True, "pos": "learned", "norm": "layernorm",
                "activation": "gelu_tanh", "tie_weights": True, "norm_eps": 1e-5, "qk_norm": False,
                "logit_softcap": 0.0}  # what the gpt2_folder fixture holds


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    """Reading a source imports torch in a worker: done up front, not inside the first test's timeouts."""
    importlib.import_module("torch")


@pytest.fixture
def panes(qtbot, small_corpus: Path):
    """The Model and Tokenizer panes on one context, with a corpus open."""
    ctx = make_context()
    model, tok = ModelPane.from_context(ctx), TokenizerPane.from_context(ctx)
    for pane in (model, tok):
        qtbot.addWidget(pane)
        pane.resize(700, 900)
        pane.show()
    with qtbot.waitSignal(ctx.session.tokenizer_changed, timeout=30_000, check_params_cb=lambda info: info is not None):
        ctx.session.open_corpus([str(small_corpus)])  # (a char tokenizer, built by itself)
    yield ctx, model, tok
    model.shutdown()
    tok.shutdown()
    ctx.session.shutdown()
    ctx.runs.shutdown()


def pick(qtbot, pane: ModelPane, kind: str, folder: Path | str) -> None:
    """Choose an entry of "Start from" as a user does (the folder dialog answering ``folder``), and wait for the
    source to be read."""
    picker = pane.source_picker
    picker.ask_folder = lambda _kind: str(folder)
    picker.combo.activated.emit(picker.combo.findData(kind))
    qtbot.waitUntil(lambda: not pane.reading_source, timeout=30_000)


def test_a_hugging_face_folder_locks_the_architecture_and_sets_fine_tuning_defaults(qtbot, panes, gpt2_folder: Path) -> None:
    ctx, pane, _ = panes
    config, form = ctx.config, pane.form
    assert "init_from" not in form.editors and not pane.findChild(QLineEdit, "cfg_init_from")  # the picker instead
    assert form.labels["init_from"].text() == "Start from" and not pane.lora_group.isEnabled()
    assert "pretrained" in pane.lora_group.toolTip()
    config.load_flat({"max_iters": 500, "block_size": 256, "learning_rate": 1e-3, "dropout": 0.1})

    pick(qtbot, pane, HF, gpt2_folder)
    assert pane.source is not None and not pane.messages.isVisible()
    assert config.value("init_from") == str(gpt2_folder.resolve())
    for key, value in ARCHITECTURE.items():  # the source's values, read-only, saying why
        assert config.value(key) == value, key
        editor = form.editors[key]
        assert not editor.isEnabled() and "comes from the source model" in editor.toolTip(), key
    assert config.value("block_size") == 128 and form.editors["block_size"].isEnabled()  # capped at its context
    assert form.editors["block_size"].maximum() == 128 and "128" in form.editors["block_size"].toolTip()
    assert form.editors["shift"].isEnabled() and form.editors["learning_rate"].isEnabled()
    # fine-tuning defaults, once
    assert (config.value("learning_rate"), config.value("dropout"), config.value("warmup_iters")) == (FULL_FT_LR, 0.0, 10)
    assert math.isclose(config.value("min_lr"), FULL_FT_LR / 10) and config.is_valid, config.error
    picker = pane.source_picker
    assert picker.combo.currentData() == HF and "gpt2" in picker.label.text()
    assert picker.summary.text().startswith("GPT-2 2×32, ") and "context 128" in picker.summary.text()
    assert "Fine-tuning defaults" in picker.hint.text() and picker.hint.isVisible()
    assert pane.figure_labels["vocab"].text().startswith("400")  # the source's vocabulary

    # LoRA: opened by the source; trainable / total follow lora_rank, and so does the memory estimate
    from shiftstudio.core.model.estimate import count_trainable, estimate_memory

    assert pane.lora_group.isEnabled() and "frozen" in pane.lora_group.toolTip()
    full = pane.figure_labels["trainable"].text()
    trainable, total = count_trainable(config.config.model, config.config.train, 400)
    assert trainable == total and full == f"{human_count(total)} / {human_count(total)}"
    memory_full = estimate_memory(config.config.model, config.config.train, 400)["total"]
    form.editors["lora_rank"].setValue(8)
    assert config.config.train.lora_rank == 8
    trainable, total = count_trainable(config.config.model, config.config.train, 400)
    assert trainable < total and pane.figure_labels["trainable"].text().startswith(f"{human_count(trainable)} / {human_count(total)}")
    assert estimate_memory(config.config.model, config.config.train, 400)["total"] < memory_full
    assert "LoRA r=8" in pane.figure_labels["memory"].toolTip()
    assert config.value("learning_rate") == LORA_LR  # the default, switched with the mode
    form.editors["lora_targets"].boxes["mlp_in"].setChecked(False)  # the checkboxes are the comma list
    assert config.value("lora_targets") == "attn_qkv,attn_out,mlp_out"
    fewer, _ = count_trainable(config.config.model, config.config.train, 400)
    assert fewer < trainable and pane.figure_labels["trainable"].text().startswith(human_count(fewer))
    form.editors["lora_rank"].setValue(0)
    assert config.value("learning_rate") == FULL_FT_LR and pane.figure_labels["trainable"].text() == full


def test_a_runs_checkpoint_is_a_source_too(qtbot, panes, tiny_run: Path) -> None:
    """The run folder means its best (else latest) checkpoint; the settings name that checkpoint, as the run will."""
    from shiftstudio.core.runs.checkpoint import list_checkpoints
    from shiftstudio.gui.widgets.source_picker import RUN

    ctx, pane, tok = panes
    pick(qtbot, pane, RUN, tiny_run)
    assert pane.source is not None, pane.messages.text()
    infos = list_checkpoints(tiny_run)
    step = ([i for i in infos if i.is_best] or infos)[-1].path.name
    assert ctx.config.value("init_from") == str(tiny_run.resolve() / "checkpoints" / step)
    assert (ctx.config.value("n_layer"), ctx.config.value("n_embd"), ctx.config.value("block_size")) == (1, 16, 16)
    assert pane.source_picker.combo.currentData() == RUN and step in pane.source_picker.label.text()
    assert "context 16" in pane.source_picker.summary.text() and "character-level" in pane.source_picker.summary.text()
    qtbot.waitUntil(lambda: tok.source_info is not None, timeout=30_000)
    assert tiny_run.name in tok.source_label.text()


def test_a_folder_that_is_no_gpt2_shows_one_line_and_changes_nothing(qtbot, panes, gpt2_folder: Path, tmp_path: Path) -> None:
    ctx, pane, _ = panes
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}), encoding="utf-8")
    before = ctx.config.values()
    pick(qtbot, pane, HF, bert)
    assert pane.messages.level() == "error" and "bert" in pane.messages.text() and "\n" not in pane.messages.text()
    assert ctx.config.values() == before and pane.source is None
    assert pane.source_picker.combo.currentData() == NEW and not pane.form.locked_keys()
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((gpt2_folder / "config.json").read_text(), encoding="utf-8")
    pick(qtbot, pane, HF, no_tokenizer)
    assert "no tokenizer" in pane.messages.text() and ctx.config.values() == before
    # with a source set, a bad folder leaves that source in place
    pick(qtbot, pane, HF, gpt2_folder)
    chosen = ctx.config.values()
    pick(qtbot, pane, HF, bert)
    assert "bert" in pane.messages.text() and ctx.config.values() == chosen
    assert pane.source is not None and pane.form.locked_keys() == set(ARCHITECTURE)


def test_new_model_unlocks_and_gives_back_the_settings_from_before(qtbot, panes, gpt2_folder: Path) -> None:
    ctx, pane, _ = panes
    config = ctx.config
    before = {k: config.value(k) for k in ("n_layer", "n_embd", "bias", "activation", "tokenizer")}
    pick(qtbot, pane, HF, gpt2_folder)
    pane.form.editors["lora_rank"].setValue(4)
    assert pane.form.locked_keys()
    pick(qtbot, pane, NEW, "")
    assert config.value("init_from") == "scratch" and config.value("lora_rank") == 0
    assert {k: config.value(k) for k in before} == before
    assert not pane.form.locked_keys() and pane.form.editors["n_layer"].isEnabled()
    assert "comes from" not in pane.form.editors["n_layer"].toolTip()
    assert pane.form.editors["block_size"].maximum() == 65536 and not pane.lora_group.isEnabled()
    assert pane.source_picker.combo.currentData() == NEW and not pane.source_picker.label.isVisible()


def test_the_tokenizer_pane_uses_the_sources_tokenizer_and_says_why_it_is_locked(qtbot, panes, gpt2_folder: Path) -> None:
    ctx, pane, tok = panes
    assert tok.char_radio.isEnabled() and not tok.source_label.isVisible()
    pick(qtbot, pane, HF, gpt2_folder)
    qtbot.waitUntil(lambda: tok.source_info is not None, timeout=30_000)
    qtbot.waitUntil(lambda: ctx.session.tokenizer is not None and ctx.session.tokenizer.vocab_size == 400, timeout=30_000)
    assert tok.source_label.isVisible()
    assert "tokenizer comes from the source model" in tok.source_label.text() and "gpt2" in tok.source_label.text()
    assert "400 tokens" in tok.source_label.text() and "byte-level BPE" in tok.source_label.text()
    assert not any(w.isEnabled() for w in (tok.char_radio, tok.bpe_radio, tok.file_radio, tok.browse_button))
    assert tok.vocab_label.text().startswith("400 tokens")
    from shiftstudio.core.model.hf import load_hf_tokenizer

    text = "ROMEO: But, soft!"
    tok.try_edit.setPlainText(text)
    qtbot.waitUntil(lambda: tok.tokens_view.source == text, timeout=3000)
    assert [i for i, _ in tok.token_pieces()] == load_hf_tokenizer(gpt2_folder).encode(text)  # the source's ids
    pick(qtbot, pane, NEW, "")
    assert tok.char_radio.isEnabled() and not tok.source_label.isVisible() and tok.char_radio.isChecked()


def test_a_source_chosen_before_the_corpus_brings_its_tokenizer_to_it(qtbot, gpt2_folder: Path, small_corpus: Path) -> None:
    ctx = make_context()
    pane, tok = ModelPane.from_context(ctx), TokenizerPane.from_context(ctx)
    for widget in (pane, tok):
        qtbot.addWidget(widget)
    pick(qtbot, pane, HF, gpt2_folder)
    qtbot.waitUntil(lambda: tok.source_info is not None, timeout=30_000)
    assert ctx.session.tokenizer is None
    with qtbot.waitSignal(ctx.session.tokenizer_changed, timeout=30_000, check_params_cb=lambda info: info is not None):
        ctx.session.open_corpus([str(small_corpus)])
    assert ctx.session.tokenizer.vocab_size == 400 and tok.vocab_label.text().startswith("400 tokens (byte-level BPE")
    for widget in (pane, tok):
        widget.shutdown()
    ctx.session.shutdown()
    ctx.runs.shutdown()


def test_the_playground_samples_from_a_hugging_face_folder(qtbot, gpt2_folder: Path, tmp_path: Path) -> None:
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.runs.loading import load_any
    from shiftstudio.gui.panes.generate import NO_CHECKPOINT, GeneratePane
    from shiftstudio.gui.settings import Settings

    settings = Settings(tmp_path / "gui.json")
    ctx = make_context(settings)
    pane = GeneratePane.from_context(ctx)
    qtbot.addWidget(pane)
    pane.resize(1000, 600)
    pane.show()
    assert pane.status.text() == NO_CHECKPOINT and not pane.generate_button.isEnabled()
    weights = pane.weights
    weights.ask_hf_folder = lambda: str(tmp_path)  # not a model folder: a message, nothing chosen
    pane.source.activated.emit(pane.source.count() - 1)  # "Hugging Face folder…"
    assert "not a Hugging Face model folder" in pane.status.text() and pane.status.property("error") is True
    assert not pane.generate_button.isEnabled()
    weights.ask_hf_folder = lambda: str(gpt2_folder)
    pane.source.activated.emit(pane.source.count() - 1)
    assert pane.source.currentText() == "gpt2 (Hugging Face)" and pane.generate_button.isEnabled()
    assert not pane.ema.isEnabled() and "no EMA" in pane.ema.toolTip()
    assert settings.get("generate_hf_folders") == [str(gpt2_folder.resolve())]

    prompt = "ROMEO:"
    pane.prompt.setPlainText(prompt)
    pane.temperature.setValue(0.0)  # greedy
    pane.max_tokens.setValue(12)
    pane.stop_eot.setChecked(False)
    assert pane.generate()
    qtbot.waitUntil(lambda: not pane.running, timeout=60_000)
    assert pane.status.property("error") is False, pane.status.text()
    model, tokenizer, _ = load_any(gpt2_folder)
    expected = "".join(t.text for t in Generation(model, tokenizer, prompt, pane.settings()))
    assert pane.output_text() == expected and len(pane.output_a.tokens) == 12

    # a folder that is no GPT-2: its one line in the message line
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    assert pane.add_hf_folder(bert)
    assert pane.generate()
    qtbot.waitUntil(lambda: not pane.running, timeout=60_000)
    assert pane.status.property("error") is True and "bert" in pane.status.text() and pane.generate_button.isEnabled()
    bert_index = pane.source.findData(f"hf:{bert.resolve()}")
    assert bert_index >= 0 and pane.source.findData(f"hf:{gpt2_folder.resolve()}") > bert_index  # newest first
    pane.source.setCurrentIndex(pane.source.findData(f"hf:{gpt2_folder.resolve()}"))

    # the folder is offered again at the next start
    settings.save()  # as the window does when it closes
    again_ctx = make_context(Settings(tmp_path / "gui.json"))
    again = GeneratePane.from_context(again_ctx)
    qtbot.addWidget(again)
    offered = [again.source.itemText(i) for i in range(again.source.count())]
    assert offered == ["bert (Hugging Face)", "gpt2 (Hugging Face)", "Hugging Face folder…"]
    assert again.generate_button.isEnabled()
    pane.shutdown()
    for c in (ctx, again_ctx):
        c.runs.shutdown()
        c.session.shutdown()


def test_a_fine_tuning_run_started_from_the_window_trains_and_records_its_origin(window, qtbot, gpt2_folder: Path) -> None:
    from shiftstudio.config import RunConfig
    from shiftstudio.gui.run_plan import differences

    config, runs, pane = window.ctx.config, window.ctx.runs, window.panes["model"]
    pick(qtbot, pane, HF, gpt2_folder)
    assert pane.source is not None, pane.messages.text()
    tok = window.panes["tokenizer"]
    qtbot.waitUntil(lambda: window.ctx.session.tokenizer is not None and window.ctx.session.tokenizer.vocab_size == 400,
                    timeout=30_000)
    pane.form.editors["lora_rank"].setValue(4)
    config.load_flat({"max_iters": 6, "lr_decay_iters": 6, "eval_interval": 3, "block_size": 32})
    assert config.is_valid, config.error
    assert tok.source_label.isVisible() and runs.start_action.isEnabled(), window.panes["train"].reason_label.text()
    with qtbot.waitSignal(runs.run_finished, timeout=120_000) as finished:
        qtbot.mouseClick(window.panes["train"].start_button, Qt.LeftButton)
    assert finished.args[0].reason == "completed", window.panes["train"].messages.text()
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    run_dir = Path(finished.args[0].run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    origin = record["origin"]
    assert origin["kind"] == "hf" and origin["path"] == str(gpt2_folder.resolve()) and origin["base_sha256"]
    assert record["config"]["model"]["init_from"] == str(gpt2_folder.resolve())
    assert record["config"]["train"]["lora_rank"] == 4 and record["config"]["model"]["n_embd"] == 32
    assert record["data"]["vocab_size"] == 400
    assert differences(config.config, RunConfig.from_dict(record["config"])) == []  # the window's settings, as run
    kinds = [json.loads(line)["kind"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "eval" in kinds and "checkpoint" in kinds
    assert (run_dir / "checkpoints" / "step-6").is_dir() and (run_dir / "base.safetensors").is_file()

    # the playground: the base model (its folder) beside the fine-tuned checkpoint
    gen = window.panes["generate"]
    qtbot.waitUntil(lambda: gen.source.findData("latest") >= 0, timeout=10_000)
    gen.source.setCurrentIndex(gen.source.findData("latest"))
    gen.compare.setChecked(True)
    assert gen.add_hf_folder(gpt2_folder, compare=True)
    gen.prompt.setPlainText("ROMEO:")
    gen.max_tokens.setValue(8)
    gen.stop_eot.setChecked(False)
    assert gen.generate()
    qtbot.waitUntil(lambda: not gen.running, timeout=60_000)
    assert gen.status.property("error") is False, gen.status.text()
    assert len(gen.output_a.tokens) == len(gen.output_b.tokens) == 8
    assert "step 6" in gen.title_a.text() and "Hugging Face" in gen.title_b.text()
