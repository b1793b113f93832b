"""``shiftstudio train``, ``resume`` and ``info``: the training engine from a terminal.

``train`` builds a config (defaults, a preset or a TOML/JSON file, then
``--key=value`` overrides), checks the device, prepares the token data (or
opens ``--data DIR``), creates the run folder and drives
:class:`~shiftstudio.core.train.trainer.Trainer`, printing its reports: a live
progress line on a terminal, plain lines otherwise, eval lines and a final
summary. The first Ctrl-C (or SIGTERM) asks the trainer to stop, which saves
a checkpoint; a second one quits at once. ``resume`` continues a run folder,
``info`` describes one.

Exit codes: 0 done, 1 the run failed (bad data, NaN loss, damaged checkpoint),
2 bad command line or config, 130/143 stopped by Ctrl-C/SIGTERM (after a
clean checkpoint).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse
from shiftstudio.cli.printer import drive
from shiftstudio.cli.progress import ProgressLine
from shiftstudio.format import human_bytes, human_count, human_duration
from shiftstudio.config import ConfigError, RunConfig
from shiftstudio.presets import load_preset

log = logging.getLogger(__name__)

TRAIN = Command(
    name="train",
    summary="Train a model headless: prepare the data, create a run folder and train, with checkpoints.",
    usage="train [CONFIG.toml] [--preset NAME] [--corpus PATH ...] [--data DIR] [--key=value ...] --out RUN_DIR",
    options=[
        Option("out", "run folder to create (default: a new folder under the runs directory)", metavar="RUN_DIR"),
        Option("preset", "start from a shipped or saved preset (cpu-tiny, gpu-small, gpt2-124m, …)", metavar="NAME"),
        Option("data", "train on a folder written by 'shiftstudio prepare' instead of preparing the corpus", metavar="DIR"),
        Option("sample", "print a sample continuing TEXT at every evaluation", metavar="TEXT"),
        Option("errors", "invalid UTF-8 in the corpus: strict (stop) or replace (use U+FFFD)", default="strict", metavar="MODE"),
    ],
    positionals="CONFIG",
    max_positionals=1,
    config_keys=True,
)

RESUME = Command(
    name="resume",
    summary="Continue a run from its latest checkpoint, exactly where it stopped.",
    usage="resume RUN_DIR [--max_iters N] [--sample TEXT] [--micro_splits N] [--on_out_of_memory split|stop]",
    options=[
        Option("max_iters", "train until this step (default: the run's max_iters)", kind="int", metavar="N"),
        Option("sample", "print a sample continuing TEXT at every evaluation", metavar="TEXT"),
        Option("micro_splits", "cut each micro-batch into N pieces from now on (a run stopped out of memory: twice "
               "what it had; the batch per step and the results stay the same, it is slower)", kind="int", metavar="N"),
        Option("on_out_of_memory", "split or stop, from now on (recorded with the run)", metavar="POLICY"),
    ],
    positionals="RUN_DIR",
    min_positionals=1,
    max_positionals=1,
)

INFO = Command(
    name="info",
    summary="Show a run's config, size, progress, checkpoints and best validation loss.",
    usage="info RUN_DIR [--json]",
    options=[Option("json", "print the summary as JSON", kind="bool", default=False)],
    positionals="RUN_DIR",
    min_positionals=1,
    max_positionals=1,
)

COMMANDS = {"train": TRAIN, "resume": RESUME, "info": INFO}


def run(name: str, argv: list[str]) -> int:
    command = COMMANDS[name]
    if help_asked(command, argv):
        return 0
    values, positionals, overrides = parse(command, argv)
    if name == "train":
        return _train(values, positionals, overrides)
    if name == "resume":
        return _resume(values, Path(positionals[0]))
    return _info(values, Path(positionals[0]))


# -- train ------------------------------------------------------------------------


def build_config(config_file: str | None, preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, a preset or a file, then the command line's ``--key=value``. Raises :class:`UsageError`."""
    if config_file and preset:
        raise UsageError("give a config file or --preset, not both")
    try:
        base = load_preset(preset) if preset else RunConfig.load(config_file) if config_file else RunConfig()
        config = base.updated(overrides)
        # absolute corpus paths: run.json must still find the text when resumed from another folder
        return config.updated({"corpus": [str(Path(p).expanduser().resolve()) for p in config.data.corpus]})
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def with_source(config: RunConfig) -> RunConfig:
    """A fine-tuning config takes its architecture and tokenizer from ``init_from`` (exit 2 when it is unusable)."""
    if config.model.from_scratch:
        return config
    from shiftstudio.core.errors import RunError, TokenizerError
    from shiftstudio.core.runs.origin import apply_source

    try:
        return apply_source(config)
    except (ConfigError, RunError, TokenizerError) as exc:
        raise UsageError(str(exc)) from None


def check_device(config: RunConfig) -> None:
    """Fail before any work if the device or precision does not exist here (exit 2)."""
    from shiftstudio.core.train.device import resolve_device, resolve_dtype

    try:
        resolve_dtype(config.train.dtype, resolve_device(config.train.device))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _train(values: dict[str, Any], positionals: list[str], overrides: dict[str, Any]) -> int:
    if values["errors"] not in ("strict", "replace"):
        raise UsageError(f"--errors must be strict or replace, got {values['errors']!r}")
    if values["errors"] != "strict":  # recorded with the run, so a resume rebuilds the same data
        overrides = {**overrides, "encoding_errors": values["errors"]}
    config = build_config(positionals[0] if positionals else None, values["preset"], overrides)
    config = with_source(config)
    check_device(config)
    base = load_preset(values["preset"]) if values["preset"] else None  # run names tag what differs from it

    from shiftstudio.cli import error, user_message
    from shiftstudio.core.errors import Cancelled, CorpusError, RunError
    from shiftstudio.core.runs.folder import create_run, default_run_dir
    from shiftstudio.core.errors import DataError, TokenizerError
    from shiftstudio.core.data.store import TokenStore, prepare
    from shiftstudio.core.runs.layout import is_run_dir

    ranks = _join_ranks(config)
    if not ranks.main:
        return _train_other_rank(values, ranks)
    out = Path(values["out"]) if values["out"] else default_run_dir(config, base)
    if is_run_dir(out):
        raise UsageError(f"{out} already holds a run: continue it with 'shiftstudio resume {out}' or pick another --out")
    line = ProgressLine()
    try:
        if values["data"]:
            store = TokenStore.open(values["data"])
        else:
            store = prepare(config.data, progress=_prepare_progress(line))
    except (CorpusError, TokenizerError, DataError, OSError) as exc:
        line.close()
        return error(user_message(exc), 1)
    except (Cancelled, KeyboardInterrupt):
        line.close()
        return error("interrupted while preparing the data: nothing was written", 130)
    line.close()
    check_sample_prompt(values["sample"], store.tokenizer)
    try:
        run_dir = create_run(config, store, out)
    except (ConfigError, RunError) as exc:  # the config does not fit the data, or --out is taken
        raise UsageError(str(exc)) from None
    except OSError as exc:
        return error(str(exc), 1)
    if ranks.distributed:
        ranks.text(str(run_dir))  # where the run is, for the other ranks
    print(f"data: {store.summary()}")
    if getattr(store, "is_records", False):  # fine-tuning records: say what the context cuts off
        for warning in store.record_stats(config.model.block_size, config.model.shift).get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)

    from shiftstudio.core.train.control import ViewRequest
    from shiftstudio.core.train.trainer import Trainer

    return drive(Trainer(run_dir, store, sample_prompt=values["sample"], views=ViewRequest(batch_views=False), purpose="shiftstudio train"))


def _join_ranks(config: Any) -> Any:
    """This process's place under ``torchrun`` (joined to the others), after checking the settings can train on
    that many processes: a usage error said by rank 0 (the others leave quietly with the same status)."""
    from shiftstudio.core.train.ranks import check_config, from_env

    try:
        ranks = from_env()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        check_config(config, ranks.world)
    except ConfigError as exc:
        if not ranks.main:  # every rank finds the same: rank 0 says it
            raise SystemExit(2) from None
        raise UsageError(str(exc)) from None
    try:
        if ranks.distributed:  # under torchrun: rank 0 makes the run, the others train it with it
            ranks.init(config.train.device)
    except ConfigError as exc:
        raise UsageError(f"{ranks.describe()}: {exc}") from None
    return ranks


def _train_other_rank(values: dict[str, Any], ranks: Any) -> int:
    """Ranks 1..N-1 of a ``torchrun`` job: wait for rank 0's run folder, then train it with rank 0 (quietly:
    rank 0 prints and writes the run's files)."""
    import os

    from shiftstudio.cli import error
    from shiftstudio.core.errors import RunError
    from shiftstudio.core.runs.folder import open_run_store
    from shiftstudio.core.train.control import ViewRequest
    from shiftstudio.core.train.trainer import Trainer

    run_dir = Path(ranks.text(""))
    try:
        trainer = Trainer(run_dir, open_run_store(run_dir), sample_prompt=values["sample"],
                          views=ViewRequest(batch_views=False))
    except (RunError, ConfigError, OSError) as exc:
        return error(f"{ranks.describe()}: {exc}", 1)
    with open(os.devnull, "w") as quiet:
        return drive(trainer, out=quiet)


def check_sample_prompt(prompt: str | None, tokenizer: Any) -> None:
    """--sample must be text the run's tokenizer can read (a usage error, before anything trains)."""
    if not prompt:
        return
    from shiftstudio.core.errors import GenerationError
    from shiftstudio.core.generate.generation import encode_prompt

    try:
        encode_prompt(tokenizer, prompt)
    except GenerationError as exc:
        raise UsageError(f"--sample: {exc}") from None


def _prepare_progress(line: ProgressLine):
    phases = {"scanning": "reading", "tokenizer": "tokenizer", "encoding": "encoding"}

    def on_progress(p) -> None:
        line.bar(phases.get(p.phase, p.phase), p.done, p.total, f"{human_bytes(p.done)} / {human_bytes(p.total)}")

    return on_progress


# -- resume -----------------------------------------------------------------------


def _resume(values: dict[str, Any], run_dir: Path) -> int:
    from shiftstudio.cli import error, user_message
    from shiftstudio.core.errors import Cancelled, CorpusError, DataError, RunError, TokenizerError
    from shiftstudio.core.runs.checkpoint import latest_checkpoint
    from shiftstudio.core.runs.folder import load_run_config, open_run_store
    from shiftstudio.core.train.control import ViewRequest
    from shiftstudio.core.train.trainer import Trainer

    max_iters = values["max_iters"]
    if max_iters is not None and max_iters < 1:
        raise UsageError(f"--max_iters must be at least 1, got {max_iters}")
    try:
        config = load_run_config(run_dir)
    except RunError as exc:
        return error(str(exc), 1)
    check_device(config)
    from shiftstudio.config import OOM_CHOICES
    from shiftstudio.core.train.trainer import check_micro_splits

    try:
        check_micro_splits(values["micro_splits"], config.train.batch_size)
    except ConfigError as exc:
        raise UsageError(f"--{exc}") from None
    policy = values["on_out_of_memory"]
    if policy is not None and policy not in OOM_CHOICES:
        raise UsageError(f"--on_out_of_memory must be one of {', '.join(OOM_CHOICES)}, got {policy!r}")
    target = config.train.max_iters if max_iters is None else max_iters
    latest = latest_checkpoint(run_dir)
    if latest is not None and latest.step >= target:
        print(f"{run_dir} is already at step {latest.step:,} (max_iters {target:,}): nothing to do; "
              f"pass --max_iters=N to train further")
        return 0
    ranks = _join_ranks(config)
    line = ProgressLine()
    try:
        if ranks.distributed and not ranks.main:
            ranks.barrier()  # rank 0 rebuilds the token data if it is gone; the others then open it
        store = open_run_store(run_dir, prepare_missing=ranks.main, progress=_prepare_progress(line) if ranks.main else None)
        if ranks.distributed and ranks.main:
            ranks.barrier()
        check_sample_prompt(values["sample"], store.tokenizer)
        trainer = Trainer(run_dir, store, max_iters=max_iters, sample_prompt=values["sample"], views=ViewRequest(batch_views=False), purpose="shiftstudio resume",
                          micro_splits=values["micro_splits"], on_out_of_memory=policy)
    except (RunError, CorpusError, TokenizerError, DataError, OSError) as exc:
        line.close()
        return error(user_message(exc), 1)
    except (Cancelled, KeyboardInterrupt):
        line.close()
        return error("interrupted while preparing the data", 130)
    line.close()
    if not trainer.ranks.main:  # under torchrun, rank 0 prints
        import os

        with open(os.devnull, "w") as quiet:
            return drive(trainer, out=quiet)
    return drive(trainer)


# -- info ----------------------------------------------------------------------------


def _info(values: dict[str, Any], run_dir: Path) -> int:
    from shiftstudio.cli import error
    from shiftstudio.core.errors import RunError
    from shiftstudio.core.runs.folder import run_summary

    try:
        s = run_summary(run_dir)
    except RunError as exc:
        return error(str(exc), 1)
    if values["json"]:
        data = {k: v for k, v in s.items() if k not in ("config", "checkpoints")}
        data["config"] = s["config"].to_dict()
        data["checkpoints"] = [
            {"step": c.step, "path": str(c.path), "best": c.is_best, "val_loss": c.val_loss} for c in s["checkpoints"]
        ]
        print(json.dumps(data, indent=2))
        return 0
    print(format_info(s))
    return 0


def format_info(s: dict[str, Any]) -> str:
    from shiftstudio.core.model.estimate import count_trainable

    c: RunConfig = s["config"]
    m = c.model
    versions = s["versions"]
    data = s["data"]
    lines = [
        f"run          {s['name']}  ({s['run_dir']})",
        f"created      {s['created'] or '?'} with shiftstudio {versions.get('shiftstudio', '?')}, torch {versions.get('torch', '?')}",
        f"model        {m.n_layer} layers × {m.n_embd} wide, {m.n_head} heads, context {m.block_size}, shift {m.shift}, "
        f"{m.pos} positions",
        f"size         {s['n_params']:,} parameters ({human_count(s['n_params'])}; "
        f"{human_count(s['n_params_non_embedding'])} without embeddings), {human_count(s['flops_per_token'])} FLOP/token",
        f"data         {data.get('tokenizer_kind', '?')} tokenizer, vocab {s['vocab_size']:,}, "
        f"{data.get('train_tokens', 0):,} train + {data.get('val_tokens', 0):,} val tokens",
        f"progress     step {s['steps']:,} of {s['max_iters']:,}, {human_count(s['tokens'])} tokens, "
        f"{human_duration(s['time_s'])} of training",
    ]
    origin = s.get("origin")
    if origin:
        lines.insert(3, f"starts from  {origin.get('label') or origin.get('path')} ({origin.get('kind')}, sha256 {str(origin.get('sha256', '?'))[:12]}…)")
    if c.train.lora_rank > 0:
        trainable, total = count_trainable(m, c.train, s["vocab_size"])
        lines.insert(4 if origin else 3, f"training     LoRA rank {c.train.lora_rank} (alpha {c.train.lora_alpha:g}) on {', '.join(c.train.lora_target_list)}: "
                     f"{human_count(trainable)} of {human_count(total)} parameters train")
    if s["latest_step"] is not None and s["latest_step"] != s["steps"]:
        lines[-1] += f"; resumes from step {s['latest_step']:,}"
    best = s["best_val_loss"]
    head = " (head 1: next token)" if m.shift > 1 else ""
    lines.append(f"best val     {best:.4f}{head}" if best is not None else "best val     – (not evaluated yet)")
    last = s.get("last_eval") or {}
    per = [v for v in last.get("val_loss_per_horizon") or [] if isinstance(v, (int, float))]
    if len(per) > 1:
        lines.append(f"last eval    step {last.get('step', 0):,}: val loss per horizon "
                     + ", ".join(f"t+{k} {v:.4f}" for k, v in enumerate(per, start=1)))
    checkpoints = ", ".join(
        f"step-{ck.step}" + (" (best)" if ck.is_best else "") for ck in s["checkpoints"]
    )
    lines.append(f"checkpoints  {checkpoints or '– (none yet)'}")
    lines.append("config")
    for section, values in c.to_dict().items():
        if section == "schema_version":
            continue
        lines.append(f"  [{section}]")
        lines.extend(f"    {key} = {value!r}" for key, value in values.items())
    return "\n".join(lines)
