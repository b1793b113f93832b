"""Screenshots of every pane, from the real app after a short real training run.

Run under Xvfb (Debian's ``xvfb``)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py

It opens the sample corpus with the ``cpu-tiny`` preset (fewer steps, so it
takes about a minute on a laptop CPU), presses Start, pauses at 60 % to take
the batch inspector mid-run, lets the run finish, samples from it in the
playground and saves ``docs/screenshots/<pane>-<theme>.png`` for each pane, in
the light theme and then, switched live, the dark one. Settings and runs go to a
temporary ``SHIFTSTUDIO_HOME``, never the real profile.

``--only finetune`` takes just the Model pane set up to fine-tune
(``finetune-<theme>.png``, and ``finetune-lora-<theme>.png`` scrolled to the
LoRA group): Start from a Hugging Face GPT-2 folder
(``--hf-folder``; by default a small one made here with ``transformers``,
random weights and a BPE tokenizer trained on the sample corpus), with LoRA on.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
RUN = {
    "max_iters": 500, "lr_decay_iters": 500, "warmup_iters": 40, "eval_interval": 100, "eval_iters": 10,
    "log_interval": 5, "learning_rate": 2e-3, "min_lr": 2e-4, "device": "cpu", "dtype": "float32",
}


def wait_until(app, condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float = 0.4) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--themes", default="light,dark", help="comma-separated: light, dark")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--size", default="", help="window size, WxH (default: the size the window opens at)")
    parser.add_argument("--runs-folder", type=Path, default=None,
                        help="the library shot's runs (default: three short runs trained here)")
    parser.add_argument("--only", choices=("all", "finetune", "records", "library"), default="all",
                        help="all: every pane after a training run; finetune: the Model pane fine-tuning a GPT-2 with LoRA; "
                        "records: fine-tuning on prompt/completion records (Corpus pane and batch inspector mid-run)")
    parser.add_argument("--hf-folder", type=Path, default=None,
                        help="the Hugging Face GPT-2 folder of the finetune shot (default: a small one made here)")
    args = parser.parse_args()
    if "SHIFTSTUDIO_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="shiftstudio-shots-")
        atexit.register(shutil.rmtree, home, True)
        os.environ["SHIFTSTUDIO_HOME"] = home
    sys.path.insert(0, str(ROOT))

    from shiftstudio.gui import style
    from shiftstudio.gui.app import application, create_window
    from shiftstudio.gui.settings import Settings

    themes = [t.strip() for t in args.themes.split(",") if t.strip()]
    app = application()
    settings = Settings()
    settings.set("theme", themes[0])
    window = create_window(settings=settings)
    if args.size:
        width, height = (int(v) for v in args.size.split("x"))
        window.resize(width, height)
    window.move(0, 0)
    ctx = window.ctx
    wait_until(app, lambda: bool(window.panes), 30, "the panes")
    wait_until(app, lambda: ctx.session.corpus is not None, 120, "the sample corpus")
    wait_until(app, lambda: ctx.session.tokenizer is not None, 120, "the tokenizer")
    wait_until(app, lambda: ctx.session.device is not None, 120, "the device probe")
    if args.only == "finetune":
        return finetune_shots(app, window, themes, args)
    if args.only == "records":
        return records_shots(app, window, themes, args)
    if args.only == "library":
        return library_shots(app, window, themes, args)
    ctx.config.load_flat(RUN)
    assert ctx.config.is_valid, ctx.config.error
    assert ctx.runs.start(), "Start is disabled"
    args.out.mkdir(parents=True, exist_ok=True)

    # the batch inspector mid-run: pause at about 60 % of the steps, show a column's details, in each theme
    inspector = window.panes["inspector"]
    wait_until(app, lambda: ctx.runs.step >= RUN["max_iters"] * 3 // 5 or ctx.runs.state == "failed", 900, "mid-run")
    ctx.runs.pause()
    wait_until(app, lambda: inspector.batch is not None, 60, "a batch view")
    settle(app, 1.0)
    window.docks["model"].raise_()
    window.docks["inspector"].raise_()
    inspector.select_column(int(inspector.batch.inputs.shape[0]) * 2 // 3)
    for theme in themes:
        style.apply_theme(app, theme)
        settle(app, 0.6)
        path = args.out / f"inspector-{theme}.png"
        window.grab().save(str(path), "PNG")
        print("saved", path)
    style.apply_theme(app, themes[0])
    ctx.runs.resume()
    wait_until(app, lambda: ctx.runs.state in ("finished", "stopped", "failed"), 900, "the run")
    if ctx.runs.state == "failed":
        raise SystemExit("the run failed: " + window.panes["train"].messages.text())
    train = window.panes["train"]
    curves = train.curves
    curves.refresh()
    settle(app)
    # hover read-out in the middle of the run, as a user would see it
    curves.show_readout_at(float(ctx.runs.metrics.steps["step"][len(ctx.runs.metrics.steps) * 2 // 3]))
    tok = window.panes["tokenizer"]
    tok.try_edit.setPlainText("ROMEO: But, soft! what light through yonder window breaks? — café")  # two unknowns
    # the playground: a sample from the finished run, coloured by probability
    gen = window.panes["generate"]
    window.docks["generate"].raise_()
    settle(app, 0.5)
    gen.prompt.setPlainText("ROMEO:\n")
    gen.max_tokens.setValue(240)
    gen.seed.setValue(7)
    gen.colour.setChecked(True)
    assert gen.generate(), "Generate is disabled"
    wait_until(app, lambda: not gen.running, 120, "the sample")
    # (left pane raised, bottom pane raised, file name)
    shots = [("corpus", "inspector", "corpus"), ("tokenizer", "inspector", "tokenizer"), ("model", "generate", "model"),
             ("model", "generate", "generate")]
    for theme in themes:
        style.apply_theme(app, theme)
        settle(app, 0.5)
        for left, bottom, name in shots:
            window.docks[left].show()
            window.docks[left].raise_()
            window.docks[bottom].raise_()
            settle(app, 0.6)
            path = args.out / f"{name}-{theme}.png"
            window.grab().save(str(path), "PNG")
            print("saved", path)
        path = args.out / f"train-{theme}.png"
        curves.export_png(str(path))
        print("saved", path)
    window.close()
    ctx.runs.shutdown()
    ctx.session.shutdown()
    return 0


def small_gpt2(folder: Path) -> Path:
    """A GPT-2 folder as transformers saves one (12 layers would be slow to make here: 4 × 256, random weights), with
    a 2,048-token byte-level BPE trained on the sample corpus (vocab.json + merges.txt)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from shiftstudio import paths
    from shiftstudio.core.data.tokenizer import train_bpe

    folder.mkdir(parents=True, exist_ok=True)
    lines = paths.sample_corpus().read_text(encoding="utf-8").splitlines()
    bpe = train_bpe(iter(lines), 2048, 2)
    bpe.tk.model.save(str(folder))
    config = GPT2Config(n_layer=4, n_head=4, n_embd=256, n_positions=512, vocab_size=bpe.vocab_size, bos_token_id=0,
                        eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def finetune_shots(app, window, themes: list[str], args) -> int:
    from shiftstudio.gui import style

    ctx, pane = window.ctx, window.panes["model"]
    folder = args.hf_folder or small_gpt2(Path(os.environ["SHIFTSTUDIO_HOME"]) / "models" / "gpt2-small-4x256")
    pane.choose_source(str(folder))
    wait_until(app, lambda: not pane.reading_source, 120, "the source model")
    if pane.source is None:
        raise SystemExit("the source was refused: " + pane.messages.text())
    pane.form.editors["lora_rank"].setValue(8)
    wait_until(app, lambda: ctx.session.tokenizer is not None and ctx.session.tokenizer.vocab_size == pane.source.vocab_size,
               120, "the source's tokenizer")
    args.out.mkdir(parents=True, exist_ok=True)
    window.docks["model"].show()
    window.docks["model"].raise_()
    from PySide6.QtWidgets import QScrollArea

    scroll = pane.findChild(QScrollArea, "model_form_scroll")
    for theme in themes:
        style.apply_theme(app, theme)
        for name, top in (("finetune", pane.form.groups["Model"]), ("finetune-lora", pane.lora_group)):
            settle(app, 0.6)
            scroll.verticalScrollBar().setValue(top.y())  # that group at the top of the form
            settle(app, 0.3)
            path = args.out / f"{name}-{theme}.png"
            window.grab().save(str(path), "PNG")
            print("saved", path)
    window.close()
    ctx.runs.shutdown()
    ctx.session.shutdown()
    return 0


def addition_records(path: Path, n: int = 600) -> Path:
    """Three-digit additions as prompt/completion records ("123+456=" -> "579"), seeded."""
    import json
    import random

    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            a, b = rng.randint(100, 999), rng.randint(100, 999)
            fh.write(json.dumps({"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"}) + "\n")
    return path


def records_shots(app, window, themes: list[str], args) -> int:
    """A fine-tuning run on prompt/completion records, paused mid-run: the Corpus pane shows them as records and the
    batch inspector greys the prompt targets (not scored)."""
    from shiftstudio.gui import style

    ctx, pane = window.ctx, window.panes["model"]
    home = Path(os.environ["SHIFTSTUDIO_HOME"])
    folder = args.hf_folder or small_gpt2(home / "models" / "gpt2-small-4x256")
    records = addition_records(home / "addition.jsonl")
    window.open_corpus([str(records)])
    wait_until(app, lambda: ctx.session.corpus is not None and ctx.session.corpus.corpus.is_records, 120, "the records")
    pane.choose_source(str(folder))
    wait_until(app, lambda: not pane.reading_source, 120, "the source model")
    if pane.source is None:
        raise SystemExit("the source was refused: " + pane.messages.text())
    ctx.config.load_flat({**ctx.config.config.to_flat(), "block_size": 24, "batch_size": 8, "max_iters": 60,
                          "eval_interval": 30, "eval_iters": 2, "log_interval": 2, "lora_rank": 8})
    wait_until(app, lambda: ctx.session.tokenizer is not None and ctx.session.tokenizer.vocab_size == pane.source.vocab_size,
               120, "the source's tokenizer")
    assert ctx.config.is_valid, ctx.config.error
    assert ctx.runs.start(), "Start is disabled"
    inspector = window.panes["inspector"]
    wait_until(app, lambda: ctx.runs.step >= 20 or ctx.runs.state == "failed", 600, "mid-run")
    ctx.runs.pause()
    wait_until(app, lambda: inspector.batch is not None, 60, "a batch view")
    settle(app, 1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    window.docks["corpus"].show()
    window.docks["corpus"].raise_()
    window.docks["inspector"].raise_()
    inspector.select_column(11)  # the first completion token: the prompt (11 tokens) before it is greyed
    for theme in themes:
        style.apply_theme(app, theme)
        settle(app, 0.8)
        path = args.out / f"records-{theme}.png"
        window.grab().save(str(path), "PNG")
        print("saved", path)
    ctx.runs.stop()
    wait_until(app, lambda: ctx.runs.state in ("finished", "stopped", "failed"), 120, "the stop")
    window.close()
    ctx.runs.shutdown()
    ctx.session.shutdown()
    return 0


def library_shots(app, window, themes: list[str], args) -> int:
    """The Runs tab (a library of real runs, two selected) and the Compare tab with them."""
    import subprocess

    folder = args.runs_folder
    if folder is None:  # three short runs that differ in one setting each
        folder = Path(os.environ["SHIFTSTUDIO_HOME"]) / "shots-runs"
        for name, extra in (("baseline", []), ("lr-3e-3", ["--learning_rate", "3e-3"]), ("k2", ["--shift", "2"])):
            subprocess.run([sys.executable, "-m", "shiftstudio", "train", "--preset", "cpu-tiny", "--max_iters", "300",
                            "--lr_decay_iters", "300", "--eval_interval", "50", "--out", str(folder / name), *extra],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    library, pane = window.ctx.library, window.panes["runs"]
    library.add_folder(folder)
    window.raise_pane("runs")
    wait_until(app, lambda: not library.refreshing and pane.model.rowCount() > 0, 120, "the library")
    settle(app, 0.5)
    entries = sorted((e for e in library.entries if e.best_val is not None), key=lambda e: e.best_val)
    chosen = [e.path for e in entries[:3]]
    pane.select_paths(chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    grab_in_themes(app, window, themes, "runs", args.out)
    pane.compare_selected()
    compare = window.panes["compare"]
    wait_until(app, lambda: compare.view.comparison is not None, 120, "the comparison")
    settle(app, 1.0)
    grab_in_themes(app, window, themes, "compare", args.out)
    window.close()
    window.ctx.runs.shutdown()
    window.ctx.session.shutdown()
    return 0


def grab_in_themes(app, window, themes: list[str], pane: str, out: Path) -> None:
    """``<pane>-<theme>.png`` of the whole window with that pane in front, in each theme."""
    from shiftstudio.gui import style

    for theme in themes:
        style.apply_theme(app, theme)
        window.raise_pane(pane)
        settle(app, 0.8)
        path = out / f"{pane}-{theme}.png"
        window.grab().save(str(path), "PNG")
        print("saved", path)


if __name__ == "__main__":
    raise SystemExit(main())
