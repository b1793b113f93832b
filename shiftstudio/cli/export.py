"""``shiftstudio export``: write a run's model to the Hugging Face layout (loads in ``transformers``)."""

from __future__ import annotations

from shiftstudio.cli.options import checkpoint_options, Command, Option, UsageError, help_asked, parse

FORMATS = ("hf",)

COMMAND = Command(
    name="export",
    summary="Export a run's model at one of its checkpoints. --format hf (the only format for now) writes the "
    "Hugging Face layout: GPT-2 for learned positions, GPT-NeoX for rotary ones, loadable with "
    "transformers' AutoModelForCausalLM and AutoTokenizer. Heads 2..K of a shifted run go to a side file.",
    usage="export RUN_DIR --format hf --out DIR [--checkpoint latest|best|step-N] [--ema]",
    options=[
        Option("format", "what to write: hf (the Hugging Face layout; the only format for now)", default="hf", metavar="FORMAT"),
        Option("out", "the folder to write (new, empty, or a previous export, which is replaced)", default="", metavar="DIR"),
        *checkpoint_options("export the EMA weights of the checkpoint"),
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
        raise UsageError(f"--format {values['format']!r} is not supported: only 'hf' (the Hugging Face layout) for now")
    if not values["out"].strip():
        raise UsageError("--out DIR is required: the folder to write the export to")

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
