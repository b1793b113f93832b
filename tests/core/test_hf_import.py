"""Importing Hugging Face GPT-2 folders, judged by ``transformers`` itself; fine-tuning runs that start from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from shiftstudio.config import RunConfig
from shiftstudio.core.data.store import prepare
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.model.hf import HFError, load_hf_model, load_hf_tokenizer, read_hf_folder
from shiftstudio import paths
from shiftstudio.core.runs.folder import create_run, load_run, open_run_store
from shiftstudio.core.runs.loading import load_model
from shiftstudio.core.runs.origin import BASE_FILE, apply_source
from shiftstudio.core.train import setup
from shiftstudio.core.train.trainer import Trainer

AWKWARD = [
    "plain words", "  two leading spaces", "runs      of     spaces", "\ttabs\t\tand\ttabs", "emoji 🙂🚀 and 👩‍👩‍👧",
    "accents: café, naïve, Ångström, Ελληνικά", "CRLF line\r\nnext line\r\n", "<|endoftext|>after the end", "",
    "ROMEO:\nBut soft, what light through yonder window breaks?",
]


def hf_model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def hf_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def ids_of(folder: Path, text: str, n: int) -> torch.Tensor:
    ids = hf_tokenizer(folder).encode(text)
    assert len(ids) >= n
    return torch.tensor([ids[:n]])


# -- the model and the tokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie,activation", [(True, "gelu_new"), (False, "gelu")])
def test_logits_equal_transformers_in_float32(make_gpt2, tie: bool, activation: str) -> None:
    folder = make_gpt2(tie=tie, activation=activation)
    ours, _, meta = load_hf_model(folder)
    assert meta["model_type"] == "gpt2" and ours.config.tie_weights is tie and ours.config.bias
    assert ours.config.activation == ("gelu_tanh" if activation == "gelu_new" else "gelu")
    x = ids_of(folder, "ROMEO:\nBut soft, what light through yonder window breaks? It is the east", 40)
    with torch.no_grad():
        theirs = hf_model(folder)(x).logits  # (1, T, V)
        mine = ours(x).logits[:, 0]  # head 1: (1, T, V)
    assert mine.shape == theirs.shape
    assert torch.allclose(mine, theirs, atol=1e-4, rtol=0), (mine - theirs).abs().max()


@pytest.mark.parametrize("form", ["vocab", "json"])
def test_tokenizer_ids_equal_transformers_on_awkward_text(make_gpt2, form: str) -> None:
    folder = make_gpt2(tokenizer=form)
    assert (folder / ("vocab.json" if form == "vocab" else "tokenizer.json")).is_file()
    ours, theirs = load_hf_tokenizer(folder), hf_tokenizer(folder)
    assert ours.vocab_size == len(theirs)
    assert ours.eot_id == theirs.convert_tokens_to_ids("<|endoftext|>") == 0
    for text in AWKWARD:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text)) == text


def test_greedy_tokens_through_shiftstudio_generate_equal_transformers(gpt2_folder: Path, capsys) -> None:
    from shiftstudio.cli import main

    prompt = "KING RICHARD:\nNow is the"
    hf_tok = hf_tokenizer(gpt2_folder)
    x = torch.tensor([hf_tok.encode(prompt)])
    with torch.no_grad():
        out = hf_model(gpt2_folder).generate(x, max_new_tokens=50, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = hf_tok.decode(out[0, x.shape[1]:].tolist())
    code = main(["generate", str(gpt2_folder), "--prompt", prompt, "--temperature", "0", "--max_new_tokens", "50", "--device", "cpu"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert printed == expected + "\n"


def test_sharded_safetensors_and_a_weights_only_bin_load_the_same_model(make_gpt2, tmp_path: Path) -> None:
    folder = make_gpt2()
    reference, _, _ = load_hf_model(folder)
    sharded = make_gpt2("sharded")
    hf_model(sharded).save_pretrained(sharded, max_shard_size="40KB")
    (sharded / "model.safetensors").unlink(missing_ok=True)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    binary = make_gpt2("binary")
    torch.save(load_file(str(binary / "model.safetensors")), binary / "pytorch_model.bin")
    (binary / "model.safetensors").unlink()
    for other in (sharded, binary):
        model, _, _ = load_hf_model(other)
        for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), name


class NotATensor:  # pickled into a .bin: weights_only loading must refuse to run it
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_bin_with_pickled_objects_is_refused_not_run(make_gpt2, capsys) -> None:
    folder = make_gpt2()
    tensors = load_file(str(folder / "model.safetensors"))
    torch.save({**tensors, "extra": NotATensor()}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(HFError, match="pytorch_model.bin holds more than tensors.*weights_only refused"):
        load_hf_model(folder)
    assert "this must never run" not in capsys.readouterr().out


# -- bad folders: one line naming what is wrong ---------------------------------------------------------------


def test_bad_folders_are_named_in_one_line(make_gpt2, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HFError, match="has no config.json: not a Hugging Face model folder"):
        read_hf_folder(empty)

    bert = make_gpt2("bert")
    cfg = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(HFError, match="not a GPT-2 model: model_type 'bert'"):
        read_hf_folder(bert)

    no_tok = make_gpt2("notok")
    for name in ("vocab.json", "merges.txt"):
        (no_tok / name).unlink()
    with pytest.raises(HFError, match=r"has no tokenizer \(tokenizer.json, or vocab.json \+ merges.txt\)"):
        read_hf_folder(no_tok)

    no_weights = make_gpt2("noweights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(HFError, match="has no weights"):
        read_hf_folder(no_weights)

    missing = make_gpt2("missing")
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(HFError, match=r"weight h.1.mlp.c_fc.weight is missing"):
        load_hf_model(missing)

    wrong = make_gpt2("wrong")
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "n_embd": 64, "n_head": 2}))
    with pytest.raises(HFError, match=r"wte.weight has shape \(\d+, 32\), the config needs \(\d+, 64\)"):
        load_hf_model(wrong)

    vocab = make_gpt2("vocab")
    cfg = json.loads((vocab / "config.json").read_text())
    (vocab / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 10}))
    with pytest.raises(HFError, match=r"the tokenizer has \d+ tokens, the model's vocabulary has \d+"):
        load_hf_model(vocab)


# -- fine-tuning runs ---------------------------------------------------------------------------------------


def finetune_config(source: Path, corpus: Path, **extra) -> RunConfig:
    settings = {
        "corpus": [str(corpus)], "init_from": str(source), "block_size": 32, "batch_size": 2, "max_iters": 6,
        "eval_interval": 3, "eval_iters": 1, "log_interval": 1, "warmup_iters": 0, "lr_decay_iters": 6,
        "learning_rate": 1e-3, "min_lr": 1e-4, "device": "cpu", "dropout": 0.0, **extra,
    }
    return apply_source(RunConfig().updated(settings))


def new_run(config: RunConfig, out: Path) -> Path:
    return create_run(config, prepare(config.data), out)


def test_new_heads_start_as_head_one_and_head_one_loss_is_the_sources(gpt2_folder: Path, small_corpus: Path, tmp_path: Path) -> None:
    config = finetune_config(gpt2_folder, small_corpus, shift=3)
    assert (config.model.n_layer, config.model.n_embd, config.model.activation, config.model.bias) == (2, 32, "gelu_tanh", True)
    run_dir = new_run(config, tmp_path / "run")
    s = setup.build(run_dir, config, load_run(run_dir))
    batch = s.sampler.next()
    with torch.no_grad():
        out = s.model(batch.x, batch.y, batch.mask, return_logits=True)
        inputs = torch.cat((batch.x, batch.y[:, 0, -1:]), dim=1)  # x and the token after it: GPT-2's own shift
        theirs = hf_model(gpt2_folder)(inputs, labels=inputs).loss
    assert out.head_losses[0].item() == pytest.approx(theirs.item(), abs=1e-5)
    assert torch.equal(out.logits[:, 1], out.logits[:, 0]) and torch.equal(out.logits[:, 2], out.logits[:, 0])


def test_run_records_origin_and_resumes_without_the_source(make_gpt2, small_corpus: Path, tmp_path: Path) -> None:
    source = make_gpt2("src")
    config = finetune_config(source, small_corpus, max_iters=3, eval_interval=3, lr_decay_iters=3)
    run_dir = new_run(config, tmp_path / "run")
    origin = load_run(run_dir)["origin"]
    assert origin["kind"] == "hf" and origin["path"] == str(source.resolve()) and len(origin["sha256"]) == 64
    assert (run_dir / BASE_FILE).is_file() and len(origin["base_sha256"]) == 64
    list(Trainer(run_dir, max_iters=3).run())
    shutil.rmtree(source)  # the source folder is gone: the run does not need it any more
    shutil.rmtree(paths.cache_dir())  # nor the prepared data, nor the cached copy of the source's tokenizer
    store = open_run_store(run_dir, prepare_missing=True)
    reports = list(Trainer(run_dir, store, max_iters=6).run())
    assert type(reports[-1]).__name__ == "FinishedReport" and reports[-1].step == 6


def test_init_from_a_run_takes_its_architecture_and_tokenizer(tiny_run: Path, small_corpus: Path, tmp_path: Path) -> None:
    parent = RunConfig.from_dict(load_run(tiny_run)["config"])
    config = apply_source(RunConfig().updated({
        "corpus": [str(small_corpus)], "init_from": str(tiny_run), "n_layer": 7, "shift": 2, "block_size": 999,
        "max_iters": 2, "eval_interval": 2, "eval_iters": 1, "batch_size": 2, "lr_decay_iters": 2, "warmup_iters": 0,
    }))
    assert config.model.n_layer == parent.model.n_layer and config.model.block_size == parent.model.block_size
    assert "checkpoints/step-" in config.model.init_from  # the checkpoint it resolved to is recorded
    run_dir = new_run(config, tmp_path / "run")
    source_model, _, _ = load_model(tiny_run, Path(config.model.init_from).name)
    s = setup.build(run_dir, config, load_run(run_dir))
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(s.model.state_dict()[name], tensor), name


def test_architecture_changed_after_apply_source_is_refused(gpt2_folder: Path, small_corpus: Path, tmp_path: Path) -> None:
    config = finetune_config(gpt2_folder, small_corpus)
    tampered = config.updated({"n_layer": 3})
    with pytest.raises(ConfigError, match=r"n_layer comes from the source model \(2\)"):
        new_run(tampered, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- LoRA ---------------------------------------------------------------------------------------------------------


def test_lora_run_checkpoints_only_adapters_and_refuses_another_base(gpt2_folder: Path, small_corpus: Path, tmp_path: Path) -> None:
    config = finetune_config(gpt2_folder, small_corpus, lora_rank=4, lora_targets="attn_qkv,mlp_out", shift=2, ema_decay=0.9,
                             max_iters=3, eval_interval=3, lr_decay_iters=3)
    run_dir = new_run(config, tmp_path / "run")
    reports = list(Trainer(run_dir, max_iters=3).run())
    assert type(reports[-1]).__name__ == "FinishedReport"
    started = reports[0]
    assert started.source == "gpt2 2x32 (gpt2)" and 0 < started.n_trainable < started.n_params / 4
    assert started.n_trainable == load_run(run_dir)["model"]["n_trainable"]  # the estimate counts what really trains
    saved = load_file(str(run_dir / "checkpoints" / "step-3" / "model.safetensors"))
    assert all(".lora_" in k or k.startswith("shift_heads.") for k in saved), sorted(saved)
    assert any(k.endswith("attn.c_attn.lora_a") for k in saved) and not any("c_fc" in k for k in saved)
    state = json.loads((run_dir / "checkpoints" / "step-3" / "state.json").read_text())
    assert state["lora"]["base_sha256"] == load_run(run_dir)["origin"]["base_sha256"]
    base = load_file(str(run_dir / BASE_FILE))
    merged, _, _ = load_model(run_dir, "step-3")
    assert not torch.equal(merged.state_dict()["blocks.0.attn.c_attn.weight"], base["blocks.0.attn.c_attn.weight"])  # adapters trained
    assert torch.equal(merged.state_dict()["blocks.0.mlp.c_fc.weight"], base["blocks.0.mlp.c_fc.weight"])  # frozen, no adapter
    # the run's base replaced by other weights: resuming is refused, nothing is trained
    base["blocks.0.mlp.c_fc.weight"] += 1.0
    save_file(base, str(run_dir / BASE_FILE))
    reports = list(Trainer(run_dir, max_iters=6).run())
    assert type(reports[-1]).__name__ == "FailedReport" and "has changed since the run was created" in reports[-1].message
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-3"]


def test_lora_needs_a_source_and_fits_the_width(small_corpus: Path, gpt2_folder: Path, tmp_path: Path) -> None:
    scratch = RunConfig().updated({"corpus": [str(small_corpus)], "lora_rank": 4})
    with pytest.raises(ConfigError, match="lora_rank > 0 adapts a pretrained model"):
        new_run(scratch, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"lora_rank \(64\) must not exceed the model width n_embd \(32\)"):
        finetune_config(gpt2_folder, small_corpus, lora_rank=64)


# -- round trip: an exported run is a source again ----------------------------------------------------------------


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_an_exported_model_imports_back_identically_and_fine_tunes(pos: str, store, small_corpus: Path, tmp_path: Path) -> None:
    from shiftstudio.config import ModelConfig
    from shiftstudio.core.model.gpt import GPT
    from shiftstudio.core.model.hf_export import export_hf

    torch.manual_seed(3)
    mc = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, pos=pos, bias=pos == "learned", activation="gelu_tanh")
    ours = GPT(mc, store.tokenizer.vocab_size).eval()
    export_hf(ours, store.tokenizer, tmp_path / "export")
    back, tokenizer, meta = load_hf_model(tmp_path / "export")
    assert meta["model_type"] == ("gpt2" if pos == "learned" else "gpt_neox")
    for text in AWKWARD:
        assert tokenizer.encode(text) == store.tokenizer.encode(text), text
    x = torch.tensor([store.tokenizer.encode("First Citizen:\nBefore we proceed any further")[:32]])
    with torch.no_grad():
        assert torch.allclose(back(x).logits, ours(x).logits, atol=1e-5, rtol=0)
    config = finetune_config(tmp_path / "export", small_corpus, max_iters=2, eval_interval=2, lr_decay_iters=2, block_size=16)
    assert config.model.pos == pos and config.model.n_embd == 16
    run_dir = new_run(config, tmp_path / "run")
    reports = list(Trainer(run_dir, max_iters=2).run())
    assert type(reports[-1]).__name__ == "FinishedReport"


def test_a_fine_tuning_run_is_named_for_its_source_not_for_the_architecture(gpt2_folder: Path, small_corpus: Path) -> None:
    from shiftstudio.core.runs.folder import run_name_tags

    config = finetune_config(gpt2_folder, small_corpus, lora_rank=4, shift=2)
    tags = run_name_tags(config)
    assert tags[:3] == ["ft-gpt2", "lora4", "k2"]
    assert not {"tanh", "bias", "learned"} & set(tags)
