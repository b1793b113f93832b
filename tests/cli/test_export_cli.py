"""``shiftstudio export``: a run trained by the CLI, exported, loaded by the real ``transformers``; bad input
gives one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.config import RunConfig
from shiftstudio.core.runs.folder import prepare_and_create
from shiftstudio.core.runs.loading import load_model

TINY = [
    "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4", "--max_iters=8",
    "--warmup_iters=2", "--eval_interval=4", "--eval_iters=2", "--log_interval=4", "--device=cpu", "--num_threads=1",
]


def test_export_a_cli_run_loads_in_transformers(tmp_path: Path, small_corpus: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--pos=rope", "--shift=2", "--ema_decay=0.9",
                           "--out", run_dir)
    assert code == 0, err
    out_dir = tmp_path / "exported"
    code, out, err = run_cli(capsys, "export", run_dir, "--format", "hf", "--out", out_dir, "--checkpoint", "step-4", "--ema")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"from {run_dir} at step 4" + (" (best)" if "(best)" in lines[0] else "") + ", EMA weights"
    assert lines[1] == f"exported to {out_dir.resolve()}"
    assert lines[2].startswith("layout: Hugging Face GPT-NeoX (GPTNeoXForCausalLM), ")
    assert "model.safetensors" in lines[3] and "shift_heads.safetensors" in lines[3]
    assert "heads 2..K of the shifted objective are not part of the layout" in lines[4]
    note = json.loads((out_dir / "shiftstudio_export.json").read_text())
    assert note["source"]["step"] == 4 and note["source"]["ema"] is True

    transformers.utils.logging.disable_progress_bar()
    hf, info = AutoModelForCausalLM.from_pretrained(str(out_dir), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    hf_tok = AutoTokenizer.from_pretrained(str(out_dir))
    ours, tokenizer, _ = load_model(run_dir, "step-4", ema=True)
    text = "First Citizen:\nBefore we"
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text)
    x = torch.tensor([tokenizer.encode(text)[:16]])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x).logits[:, 0], atol=1e-4, rtol=1e-4)

    # again, latest raw weights, over the previous export (replaced whole)
    code, out, err = run_cli(capsys, "export", run_dir, "--out", out_dir)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"from {run_dir} at step 8")
    assert json.loads((out_dir / "shiftstudio_export.json").read_text())["source"]["ema"] is False


def test_export_bad_input(tmp_path: Path, tiny_run: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "export", tmp_path / "nowhere", "--out", out_dir)
    assert code == 1
    assert_one_line_error(err, "nowhere")

    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = run_cli(capsys, "export", plain, "--out", out_dir)
    assert code == 1
    assert_one_line_error(err, "plain")

    code, _, err = run_cli(capsys, "export", tiny_run, "--out", out_dir, "--checkpoint", "step-999")
    assert code == 1
    assert_one_line_error(err, "no checkpoint 'step-999'")
    code, _, err = run_cli(capsys, "export", tiny_run, "--out", out_dir, "--ema")
    assert code == 1
    assert_one_line_error(err, "no EMA weights")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", tiny_run, "--out", busy)
    assert code == 1
    assert_one_line_error(err, "not empty")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "onnx", "--out", out_dir)
    assert code == 2
    assert_one_line_error(err, "--format 'onnx' is not supported", "only 'hf'")
    code, _, err = run_cli(capsys, "export", tiny_run)
    assert code == 2
    assert_one_line_error(err, "--out DIR is required")
    assert not out_dir.exists()


def test_export_untrained_and_rmsnorm_runs(tmp_path: Path, small_corpus: Path, capsys) -> None:
    base = {"corpus": [str(small_corpus)], "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "device": "cpu"}
    fresh = prepare_and_create(RunConfig().updated(base), out_dir=tmp_path / "fresh")
    code, _, err = run_cli(capsys, "export", fresh, "--out", tmp_path / "out")
    assert code == 1
    assert_one_line_error(err, "has no checkpoints yet")

    rms = prepare_and_create(RunConfig().updated({**base, "norm": "rmsnorm"}), out_dir=tmp_path / "rms")
    code, _, err = run_cli(capsys, "export", rms, "--out", tmp_path / "out")
    assert code == 1
    assert_one_line_error(err, "cannot export: norm = rmsnorm has no Hugging Face GPT-2/GPT-NeoX layout (layernorm only)")
    assert not (tmp_path / "out").exists()
