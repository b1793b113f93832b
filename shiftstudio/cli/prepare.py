"""``shiftstudio prepare``: corpus -> tokenizer.json, train.bin, val.bin, meta.json.

A corpus of fine-tuning records also gets train/val .mask.bin and .index.bin, and the command prints the
example figures at the context given by ``--block_size``/``--shift`` (how many examples it truncates).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shiftstudio.cli.options import Command, Option, UsageError, help_asked, parse
from shiftstudio.cli.progress import ProgressLine
from shiftstudio.format import human_bytes
from shiftstudio.config import ConfigError, DataConfig

COMMAND = Command(
    name="prepare",
    summary="Read a corpus, build or load a tokenizer, and write the token ids to a folder.",
    usage="prepare CORPUS... --out DIR [--tokenizer char|bpe|PATH] [--vocab_size N] [--val_fraction F]",
    options=[
        Option("out", "folder to write tokenizer.json, train.bin, val.bin, meta.json into", metavar="DIR"),
        Option("tokenizer", "char, bpe or a path to a tokenizer.json", default="char", metavar="KIND"),
        Option("vocab_size", "BPE vocabulary size", kind="int", default=4096, metavar="N"),
        Option("min_frequency", "minimum count of a BPE merge", kind="int", default=2, metavar="N"),
        Option("val_fraction", "share of the corpus held out for validation", kind="float", default=0.1, metavar="F"),
        Option("split_seed", "seed of the document split", kind="int", default=1337, metavar="N"),
        Option("errors", "how to treat invalid UTF-8: strict (stop) or replace (use U+FFFD)", default="strict", metavar="MODE"),
        Option("block_size", "records: the context the example figures are reported for", kind="int", default=64, metavar="N"),
        Option("shift", "records: the shift the example figures are reported for", kind="int", default=1, metavar="K"),
    ],
    positionals="CORPUS",
    min_positionals=1,
)

PHASES = {"scanning": "reading", "tokenizer": "tokenizer", "encoding": "encoding"}


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, corpus, _ = parse(COMMAND, argv)
    if not values["out"]:
        raise UsageError("--out DIR is required")
    if values["errors"] not in ("strict", "replace"):
        raise UsageError(f"--errors must be strict or replace, got {values['errors']!r}")
    if values["block_size"] < 1 or values["shift"] < 1:
        raise UsageError("--block_size and --shift must be at least 1")
    try:
        data = DataConfig(
            corpus=list(corpus),
            tokenizer=values["tokenizer"],
            vocab_size=values["vocab_size"],
            min_frequency=values["min_frequency"],
            val_fraction=values["val_fraction"],
            split_seed=values["split_seed"],
            encoding_errors=values["errors"],
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

    from shiftstudio.cli import error, user_message
    from shiftstudio.core.errors import Cancelled, CorpusError, DataError, TokenizerError
    from shiftstudio.core.data.store import prepare

    line = ProgressLine()
    start = time.perf_counter()

    def on_progress(p) -> None:
        line.bar(PHASES.get(p.phase, p.phase), p.done, p.total, f"{human_bytes(p.done)} / {human_bytes(p.total)}")

    out = Path(values["out"])
    try:
        store = prepare(data, out_dir=out, progress=on_progress)
    except (CorpusError, TokenizerError, DataError, OSError) as exc:
        line.close()
        return error(user_message(exc), 1)
    except (Cancelled, KeyboardInterrupt):
        line.close()
        return error("interrupted: nothing was written", 130)
    line.close()
    for warning in store.meta.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    m = store.meta
    print(f"prepared {out} in {time.perf_counter() - start:.1f}s")
    if store.is_records:
        _print_records(store, values["block_size"], values["shift"])
        return 0
    print(f"  corpus     {m['documents']:,} documents, {m['chars']:,} characters, {m['lines']:,} lines, {human_bytes(m['bytes'])}")
    print(f"  tokenizer  {m['tokenizer_kind']}, vocab {m['vocab_size']:,}")
    print(f"  split      {m['train_tokens']:,} train / {m['val_tokens']:,} val tokens ({m['split_mode']}), {m['dtype']}")
    print(f"  chars/token {m['val_chars'] / max(1, m['val_tokens']):.2f} on val")
    return 0


def _print_records(store, block_size: int, shift: int) -> None:
    from shiftstudio.core.data.records import spread_text

    m = store.meta
    stats = store.record_stats(block_size, shift)
    chats = m.get("train_chats", 0) + m.get("val_chats", 0)
    kinds = "chats" if chats == m["examples"] else "prompt/completion" if chats == 0 else f"{chats:,} chats, the rest prompt/completion"
    print(f"  records    {m['examples']:,} examples ({kinds}), {human_bytes(m['bytes'])}")
    print(f"  tokenizer  {m['tokenizer_kind']}, vocab {m['vocab_size']:,}")
    print(f"  split      {m['train_examples']:,} train / {m['val_examples']:,} val examples "
          f"({m['train_tokens']:,} / {m['val_tokens']:,} tokens), {m['dtype']}")
    print(f"  prompt     {spread_text(stats['prompt_tokens'])} tokens (not scored)")
    print(f"  completion {spread_text(stats['completion_tokens'])} tokens (scored, with the end token)")
    print(f"  context    block_size {block_size} + shift {shift}: {stats['truncated']:,} truncated, "
          f"{stats['unscorable']:,} without a scored token")
    for warning in stats["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
