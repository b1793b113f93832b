"""A run's model at one of its checkpoints, ready to generate from or to start another run from."""

from __future__ import annotations

from pathlib import Path

import torch

from shiftstudio.core.data.tokenizer import TextTokenizer
from shiftstudio.core.errors import RunError
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.model.lora import apply_lora_settings, merge_lora, trainable_state_dict
from shiftstudio.core.runs.folder import load_run, load_run_config
from shiftstudio.core.runs.layout import RunLayout, checkpoint_name, step_of


def load_model(
    run_dir: str | Path, checkpoint: str | None = None, *, ema: bool = False, device: str | torch.device = "cpu"
) -> tuple[GPT, TextTokenizer, dict]:
    """A run's model (latest checkpoint, ``best``, or ``step-N``; raw or EMA weights) and tokenizer.

    Raises :class:`~shiftstudio.core.errors.RunError` with a readable line for
    a missing, corrupt or mismatched checkpoint.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    infos = ckpt.list_checkpoints(run_dir)
    if not infos:
        raise RunError(f"{run_dir} has no checkpoints yet: train it first")
    if checkpoint in (None, "", "latest"):
        info = infos[-1]
    elif checkpoint == "best":
        best = [i for i in infos if i.is_best]
        if not best:
            raise RunError(f"{run_dir} has no checkpoint marked best yet")
        info = best[-1]
    else:
        wanted = int(checkpoint) if checkpoint.isdigit() else step_of(checkpoint)  # '250' or 'step-250'
        found = [i for i in infos if i.step == wanted]
        if not found:
            steps = ", ".join(checkpoint_name(i.step) for i in infos)
            raise RunError(f"{run_dir} has no checkpoint {checkpoint!r} (it has {steps})")
        info = found[0]
    saved = ckpt.load_checkpoint(info.path)
    weights = saved.model
    if ema:
        if saved.ema is None:
            raise RunError(f"checkpoint {checkpoint_name(info.step)} has no EMA weights (the run trained with ema_decay = 0)")
        weights = saved.ema
    tokenizer = TextTokenizer.load(RunLayout(run_dir).tokenizer_file)
    model = GPT(config.model, tokenizer.vocab_size)
    lora = saved.state.get("lora")
    if lora:  # adapters (and new heads) over the run's frozen base: rebuild, then fold them in
        from shiftstudio.core.runs.origin import load_base

        record = load_run(run_dir)
        if lora.get("base_sha256") != (record.get("origin") or {}).get("base_sha256"):
            raise RunError(f"checkpoint {checkpoint_name(info.step)} was trained on another base than run {run_dir.name} records")
        model.load_state_dict(load_base(run_dir, record, verify=False))
        apply_lora_settings(model, config.train, dropout=0.0)
        ckpt.check_shapes(f"the adapters of checkpoint {checkpoint_name(info.step)}", weights, trainable_state_dict(model))
        model.load_state_dict(weights, strict=False)
        merge_lora(model)
        model.requires_grad_(True)
    else:
        ckpt.check_shapes(f"checkpoint {checkpoint_name(info.step)}", weights, model.state_dict())
        model.load_state_dict(weights)
    model.to(device).eval()
    meta = {"step": info.step, "path": str(info.path), "ema": ema, "is_best": info.is_best, "val_loss": info.val_loss}
    return model, tokenizer, meta


def load_any(
    path: str | Path, checkpoint: str | None = None, *, ema: bool = False, device: str | torch.device = "cpu"
) -> tuple[GPT, TextTokenizer, dict]:
    """A model to generate from: a run's checkpoint (see :func:`load_model`), or a Hugging Face folder."""
    from shiftstudio.core.model import hf
    from shiftstudio.core.runs.layout import is_run_dir

    path = Path(path)
    if not is_run_dir(path) and hf.is_hf_folder(path):
        if ema:
            raise RunError("a Hugging Face folder has no EMA weights")
        return hf.load_hf_model(path, device=device)
    return load_model(path, checkpoint, ema=ema, device=device)
