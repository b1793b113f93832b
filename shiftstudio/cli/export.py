"""``shiftstudio export``: write a run's model to the Hugging Face layout (loads in ``transformers``), or its
metrics as a TensorBoard event file or CSV files."""

from __future__ import annotations

from shiftstudio.cli.options import checkpoint_options, Command, Option, UsageError, help_asked, parse

MODEL_FORMATS = ("hf",)
METRICS_FORMATS = ("tensorboard", "csv")
FORMATS = MODEL_FORMATS + METRICS_FORMATS

COMMAND = Command(
    name="export",
    summary="Export a run's model at one of its checkpoints, or its metrics. --format hf (the default) writes the "
    "Hugging Face layout: GPT-2 for learned positions, GPT-NeoX for rotary ones, loadable with "
    "transformers' AutoModelForCausalLM and AutoTokenizer. Heads 2..K of a shifted run go to a side file. "
    "--format tensorboard writes the run's scalar curves (train and eval losses, learning rate, gradient norm, "
    "tokens/s, per-head validation losses) as one TensorBoard event file; --format csv writes them as one "
    "step,time_s,value file per curve.",
    usage="export RUN_DIR --out DIR [--format hf|tensorboard|csv] [--checkpoint latest|best|step-N] [--ema]",
    options=[
        Option("format", "what to write: hf (the model, Hugging Face layout), tensorboard or csv (the metrics)",
               default="hf", metavar="FORMAT"),
        Option("out", "the folder to write (hf: new, empty, or a previous export, which is replaced; tensorboard, "
               "csv: created if needed, files of the same names replaced)", default="", metavar="DIR"),
        *checkpoint_options("export the EMA weights of the checkpoint (hf only)"),
    ],
    positionals="RUN_DIR",
    min_positionals=1,
    max_positionals=1,
)


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, positionals, _ = parse(COMMAND, argv)
    fmt = values["format"].strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"--format {values['format']!r} is not supported: a model exports only 'hf' (the Hugging Face "
                         "layout), metrics 'tensorboard' or 'csv'")
    if not values["out"].strip():
        raise UsageError("--out DIR is required: the folder to write the export to")
    if fmt in METRICS_FORMATS:
        if values["checkpoint"] != "latest" or values["ema"]:
            raise UsageError(f"--checkpoint and --ema choose model weights: --format {fmt} exports the metrics")
        return _export_metrics(fmt, positionals[0], values["out"])

    from pathlib import Path

    from shiftstudio.cli import error
    from shiftstudio.core.errors import ShiftStudioError
    from shiftstudio.core.model.hf_export import check_destination, export_hf, export_problem
    from shiftstudio.core.runs.folder import load_run_config
    from shiftstudio.core.runs.loading import load_model

    run_dir, out_dir = Path(positionals[0]), Path(values["out"]).expanduser()
    try:
        problem = export_problem(load_run_config(run_dir).model)  # before any weights are read
        if problem:
            return error(problem, 1)
        check_destination(out_dir)
        model, tokenizer, meta = load_model(run_dir, values["checkpoint"], ema=values["ema"], device="cpu")
        source = {"run": str(run_dir.resolve()), "step": meta["step"], "ema": meta["ema"], "is_best": meta["is_best"],
                  "val_loss": meta["val_loss"]}
        result = export_hf(model, tokenizer, out_dir, source_note=source)
    except (ShiftStudioError, OSError) as exc:
        return error(str(exc), 1)
    which = f"step {meta['step']}" + (" (best)" if meta["is_best"] else "") + (", EMA weights" if meta["ema"] else "")
    print(f"from {run_dir} at {which}")
    for line in result.describe():
        print(line)
    return 0


def _export_metrics(fmt: str, run_arg: str, out_arg: str) -> int:
    """``--format tensorboard|csv``: the run's scalar series; one line saying what was written."""
    from pathlib import Path

    from shiftstudio.cli import error
    from shiftstudio.core.errors import ShiftStudioError
    from shiftstudio.core.runs.scalars import write_csv, write_tensorboard

    run_dir, out_dir = Path(run_arg), Path(out_arg).expanduser()
    try:
        if fmt == "tensorboard":
            path = write_tensorboard(run_dir, out_dir)
            print(f"wrote the scalars of {run_dir} to {path} (view with: tensorboard --logdir {out_dir})")
        else:
            paths = write_csv(run_dir, out_dir)
            print(f"wrote {len(paths)} CSV files (step,time_s,value) of {run_dir} to {out_dir}: "
                  + ", ".join(p.name for p in paths))
    except (ShiftStudioError, OSError) as exc:
        return error(str(exc), 1)
    return 0
