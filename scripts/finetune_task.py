"""Proof that fine-tuning works: a small base model learns a task from prompt/completion records.

    python scripts/finetune_task.py                  # 2-digit addition: ~10 minutes on 2 busy CPU cores
    python scripts/finetune_task.py --digits 3       # 3-digit addition: far harder for this model
    python scripts/finetune_task.py --task reverse   # word reversal instead
    python scripts/finetune_task.py --workdir /tmp/ft --base /tmp/ft/base --finetune_iters 3000   # reuse a base

What it does, all through the real command line (``python -m shiftstudio ...``):

1. **Task data.** ``task.jsonl``: ``{"prompt": "12+45=", "completion": "57"}`` per
   line (``--digits 3``: ``"123+456="`` → ``"579"``; ``--task reverse``:
   ``"listen="`` → ``"netsil"``), and a held-out set of prompts that never occurs in it. Only the completion (and
   the end-of-text token after it) is scored: the prompt's tokens are masked.
   ``task-scored.jsonl``: the same examples with every token scored. There is
   no switch for scoring prompts, so each record is written with an empty
   prompt and the whole text as its completion
   (``{"prompt": "", "completion": "12+45=57"}``); with the character
   tokenizer both files give exactly the same token ids, only the loss masks differ.
2. **Base model.** ``shiftstudio train --preset cpu-tiny`` (4 layers × 128,
   rotary positions, characters) pretrains on plain text: tiny shakespeare and a
   few hundred generated lines of prose with numbers in it (so that digits,
   ``+`` and ``=`` are in the character vocabulary; the prose has no sums in it).
3. **Two fine-tunes** from that run (``--init_from BASE_RUN``, full fine-tuning,
   same settings and seed, a context just long enough for an example): one on
   ``task.jsonl`` (prompt masked), one on ``task-scored.jsonl`` (prompt
   scored). They run side by side, one torch thread each, when there are two
   cores (``--one_at_a_time`` otherwise).
4. **Exact match** on the held-out prompts, before (the base) and after each
   fine-tune: greedy decoding (``load_any`` + ``Generation``, temperature 0),
   stopping at ``<|endoftext|>`` or a newline; a prompt counts when the text
   generated is exactly the completion.

Prints a table and writes ``results.json`` in the work folder (a temporary
one unless ``--workdir`` is given; ``--keep`` keeps the temporary one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMES = ["Romeo", "Juliet", "Hamlet", "Lear", "Portia", "Brutus", "Viola", "Falstaff", "Oberon", "Puck"]
THINGS = ["horses", "ducats", "swords", "lines", "men", "candles", "letters", "crowns", "sheep", "ships"]


# -- the task ------------------------------------------------------------------------------------------


def addition_examples(rng: random.Random, n_train: int, n_heldout: int, digits: int = 3) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Addition of two ``digits``-digit numbers: ("123+456=", "579"). The held-out pairs never occur in
    training; training examples are drawn (with repeats when there are fewer pairs than examples) from the rest."""
    low, high = 10 ** (digits - 1), 10**digits - 1
    everything = (high - low + 1) ** 2
    if n_heldout >= everything:
        raise SystemExit(f"--heldout {n_heldout} leaves no {digits}-digit pair to train on")
    held: set[tuple[int, int]] = set()
    while len(held) < n_heldout:
        held.add((rng.randint(low, high), rng.randint(low, high)))
    train: list[tuple[int, int]] = []
    while len(train) < n_train:
        pair = (rng.randint(low, high), rng.randint(low, high))
        if pair not in held:
            train.append(pair)
    as_text = lambda pairs: [(f"{a}+{b}=", str(a + b)) for a, b in pairs]  # noqa: E731
    return as_text(train), as_text(sorted(held))


def reversal_examples(rng: random.Random, n_train: int, n_heldout: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Word reversal: ("listen=", "netsil") over lowercase words of tiny shakespeare (4–8 letters);
    held-out prompts use words that never occur in training."""
    text = (ROOT / "resources" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    words = sorted({w for w in text.split() if w.isalpha() and w.islower() and 4 <= len(w) <= 8})
    rng.shuffle(words)
    held = words[:n_heldout]
    pool = words[n_heldout:]
    train = [rng.choice(pool) for _ in range(n_train)]  # repeats allowed: the pool is a few thousand words
    return [(f"{w}=", w[::-1]) for w in train], [(f"{w}=", w[::-1]) for w in held]


def number_prose(rng: random.Random, lines: int) -> str:
    """Plain text with numbers (and '+', '=') in it, for the base model's alphabet; no sums anywhere."""
    out = []
    for _ in range(lines):
        n, m = rng.randint(0, 999), rng.randint(0, 999)
        who, what = rng.choice(NAMES), rng.choice(THINGS)
        out.append(rng.choice([
            f"{who} paid {n} ducats for {m} {what}.",
            f"Scene {n % 7 + 1}, line {m}: enter {who}.",
            f"The ledger of {who}: {what} {n}, kept since the year {1000 + m}.",
            f"Mark +{n} by the door; the key = {m}.",
        ]))
    return "\n".join(out) + "\n"


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


# -- the command line ------------------------------------------------------------------------------------


def shiftstudio(*jobs: tuple[list[str], Path]) -> list[float]:
    """Run ``python -m shiftstudio ARGS`` for each (ARGS, log) job, side by side, output to the logs; returns
    each one's wall time. Raises SystemExit when one fails."""
    procs = []
    for args, log in jobs:
        print("  $ shiftstudio " + " ".join(args), flush=True)
        fh = log.open("w")
        procs.append((subprocess.Popen([sys.executable, "-m", "shiftstudio", *args], cwd=ROOT, stdout=fh,
                                       stderr=subprocess.STDOUT), fh, log, time.perf_counter()))
    times = []
    for proc, fh, log, start in procs:
        code = proc.wait()
        times.append(time.perf_counter() - start)
        fh.close()
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"shiftstudio failed with status {code} (see {log}):\n    " + "\n    ".join(tail))
    return times


def last_eval(run_dir: Path) -> dict:
    """The run's last eval record from metrics.jsonl (empty if none)."""
    found: dict = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") == "eval" or "val_loss" in record:
                found = record
    return found


# -- exact match -----------------------------------------------------------------------------------------


def exact_match(run_dir: Path, heldout: list[tuple[str, str]]) -> dict:
    """Greedy completions of the held-out prompts from the run's latest checkpoint, scored by exact match."""
    from shiftstudio.core.generate.filters import SamplingSettings
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.runs.loading import load_any

    model, tokenizer, _ = load_any(run_dir)
    longest = max(len(tokenizer.encode(c)) for _, c in heldout)
    settings = SamplingSettings(max_new_tokens=longest + 4, temperature=0.0, stop=("\n",), stop_at_eot=True)
    right, chars, total_chars, samples = 0, 0, 0, []
    for prompt, want in heldout:
        gen = Generation(model, tokenizer, prompt, settings)
        for _ in gen:
            pass
        got = gen.text
        right += got == want
        chars += sum(a == b for a, b in zip(got, want))
        total_chars += len(want)
        if len(samples) < 5:
            samples.append({"prompt": prompt, "want": want, "got": got})
    return {"exact": right, "n": len(heldout), "accuracy": right / len(heldout), "char_accuracy": chars / total_chars,
            "samples": samples}


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["add", "reverse"], default="add", help="3-digit addition (default) or word reversal")
    ap.add_argument("--digits", type=int, default=2,
                    help="addition: digits of each number (default 2; 3 is much harder for a model this small)")
    ap.add_argument("--train", type=int, default=20000, help="training examples (default 20000)")
    ap.add_argument("--heldout", type=int, default=300, help="held-out prompts for exact match (default 300)")
    ap.add_argument("--pretrain_iters", type=int, default=1000, help="steps of the base model on plain text (default 1000)")
    ap.add_argument("--finetune_iters", type=int, default=1500, help="steps of each fine-tune (default 1500)")
    ap.add_argument("--batch_size", type=int, default=64, help="examples per fine-tuning step (default 64)")
    ap.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate of the fine-tunes (default 1e-3)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of each training process (default 1: for a model this small one thread is "
                         "as fast, and much faster on a busy machine; 0 = torch's default)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--one_at_a_time", action="store_true",
                    help="run the two fine-tunes one after the other (default: side by side when there are cores "
                         "for both)")
    ap.add_argument("--base", type=Path, default=None, help="fine-tune this run instead of pretraining one")
    ap.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="do not delete the temporary work folder")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="shiftstudio-finetune-task-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    common = ["--device=cpu", f"--num_threads={args.threads}", f"--seed={args.seed}"]
    side_by_side = not args.one_at_a_time and (os.cpu_count() or 1) >= 2 * max(1, args.threads)
    ft_threads = args.threads
    try:
        # 1. the task as records: masked prompt, and every token scored
        if args.task == "add":
            train, heldout = addition_examples(rng, args.train, args.heldout, args.digits)
        else:
            train, heldout = reversal_examples(rng, args.train, args.heldout)
        rng.shuffle(heldout)
        write_jsonl(work / "task.jsonl", [{"prompt": p, "completion": c} for p, c in train])
        write_jsonl(work / "task-scored.jsonl", [{"prompt": "", "completion": p + c} for p, c in train])
        write_jsonl(work / "heldout.jsonl", [{"prompt": p, "completion": c} for p, c in heldout])
        longest = max(len(p) + len(c) for p, c in train + heldout)
        block = 8 * -(-(longest + 1) // 8)  # the whole example and its end token fit the window
        print(f"task {args.task}: {len(train):,} training examples, {len(heldout)} held-out prompts, "
              f"e.g. {train[0][0]!r} -> {train[0][1]!r}; fine-tuning block_size {block}  (work folder {work})", flush=True)

        # 2. the base model: pretrained on plain text
        times: dict[str, float] = {}
        if args.base is None:
            base = work / "base"
            corpus = work / "base.txt"
            corpus.write_text((ROOT / "resources" / "tinyshakespeare.txt").read_text(encoding="utf-8")
                              + number_prose(rng, 3000), encoding="utf-8")
            n = args.pretrain_iters
            times["base"], = shiftstudio((
                ["train", "--preset", "cpu-tiny", "--corpus", str(corpus), "--out", str(base), f"--max_iters={n}",
                 f"--lr_decay_iters={n}", f"--eval_interval={n}", *common], work / "base.log"))
        else:
            base = args.base.resolve()

        # 3. two fine-tunes, identical but for the loss masks
        n = args.finetune_iters
        runs = {"masked": work / "ft-masked", "scored": work / "ft-scored"}
        files = {"masked": work / "task.jsonl", "scored": work / "task-scored.jsonl"}
        jobs = [(["train", "--corpus", str(files[name]), "--init_from", str(base), "--out", str(run),
                  f"--block_size={block}", f"--batch_size={args.batch_size}", f"--learning_rate={args.learning_rate}",
                  f"--min_lr={args.learning_rate / 10}", f"--max_iters={n}", f"--lr_decay_iters={n}", "--warmup_iters=50",
                  f"--eval_interval={n}", "--eval_iters=10", "--device=cpu", f"--seed={args.seed}",
                  f"--num_threads={ft_threads}"], work / f"{name}.log") for name, run in runs.items()]
        if side_by_side:  # one thread each on two cores: the same work, half the wall time
            times.update(zip(runs, shiftstudio(*jobs)))
        else:
            times.update(zip(runs, [shiftstudio(job)[0] for job in jobs]))

        # 4. exact match on the held-out prompts
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        results = {
            "base (before)": exact_match(base, heldout),
            "fine-tuned, prompt masked": exact_match(runs["masked"], heldout),
            "fine-tuned, prompt scored": exact_match(runs["scored"], heldout),
        }
        trained = {"base (before)": "base", "fine-tuned, prompt masked": "masked", "fine-tuned, prompt scored": "scored"}
        scored = {"base (before)": "–", "fine-tuned, prompt masked": "completion + end token",
                  "fine-tuned, prompt scored": "every token"}
        print()
        print(f"held-out exact match, {args.task}, {len(heldout)} prompts never trained on "
              f"({args.finetune_iters} fine-tuning steps × {args.batch_size} examples; greedy):")
        print()
        print("| model | tokens scored | exact match | characters right | val loss (own split) | train time |")
        print("|---|---|---|---|---|---|")
        for label, r in results.items():
            run = base if trained[label] == "base" else runs[trained[label]]
            val = last_eval(run).get("val_loss")
            t = times.get(trained[label])
            print(f"| {label} | {scored[label]} | {r['exact']}/{r['n']} ({100 * r['accuracy']:.1f} %) | "
                  f"{100 * r['char_accuracy']:.1f} % | {'–' if val is None else f'{val:.3f}'} | "
                  f"{'–' if t is None else f'{t:.0f} s'} |")
        print()
        for label, r in results.items():
            shown = ", ".join(f"{s['prompt']}{s['got']!r}" for s in r["samples"][:3])
            print(f"{label}: {shown}")
        total = time.perf_counter() - started
        print(f"\ntotal {total:.0f} s")
        (work / "results.json").write_text(json.dumps({
            "task": args.task, "train_examples": len(train), "heldout": len(heldout), "block_size": block,
            "pretrain_iters": args.pretrain_iters if args.base is None else None, "finetune_iters": n,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seconds": total, "times": times,
            "results": results, "val_loss": {k: last_eval(v).get("val_loss") for k, v in runs.items()},
        }, indent=2))
        print(f"wrote {work / 'results.json'}")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
