"""The run library: every run under the runs folders, at a glance.

:func:`list_runs` turns folders into :class:`RunEntry` rows — name, state,
created, corpus, tokenizer, origin, parameters, steps done / planned, tokens,
best and last validation loss (head 1), wall time, device, notes and tags —
from each run's ``run.json``, its small ``summary.json`` (brought up to date
from the lines its log gained since, never by re-reading a whole log unless
the summary is missing or stale: see :mod:`~shiftstudio.core.runs.summary`),
its lock (:mod:`~shiftstudio.core.runs.lock`) and its newest checkpoint's
``state.json``. A folder that cannot be read is listed as *broken* with the
reason; it never breaks the listing.

States: ``running`` / ``paused`` (a live process holds the lock), ``new``
(created, never trained), ``finished`` (completed or stopped early by
patience), ``stopped`` (by the user, with a checkpoint), ``failed`` (a failure
report ends the log), ``crashed`` (the log's last start has no final report
and the lock its process held is stale: it died), ``interrupted`` (the same
without a lock file: a run from before locks), ``broken``.

Actions on runs that need no Qt live here too: notes and tags, rename, fork,
and the checks before deleting. Torch-free.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from shiftstudio.core import io
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.layout import (
    CHECKPOINT_PREFIX, CHECKPOINTS_DIR, METRICS_FILE, MODEL_FILE, RUN_FILE, STATE_FILE, RunLayout, step_of,
)
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.core.runs.summary import Summary, current_summary
from shiftstudio.core.runs.summary import write_summary as store_summary

RUN_SCHEMA = 1  # the newest run.json this library reads (folder.RUN_SCHEMA, which imports torch-side modules)
STATES = ("running", "paused", "new", "finished", "stopped", "failed", "crashed", "interrupted", "broken")
SORT_KEYS = ("name", "state", "created", "corpus", "params", "steps", "tokens", "best_val", "last_val", "time_s")


@dataclass
class RunEntry:
    """One row of the library."""

    path: Path
    name: str
    state: str
    problem: str = ""  # why the run is broken, or what went wrong (a failure's message)
    created: str = ""
    corpus: str = ""
    tokenizer: str = ""
    origin: str = "scratch"
    params: int | None = None
    steps: int = 0
    max_iters: int = 0
    tokens: int = 0
    best_val: float | None = None
    last_val: float | None = None
    time_s: float = 0.0
    device: str = ""
    notes: str = ""
    tags: list[str] = field(default_factory=list)
    holder: str = ""  # who trains it now (running / paused), or who held the stale lock (crashed)
    shift: int = 1

    @property
    def training(self) -> bool:
        return self.state in ("running", "paused")

    def text(self) -> str:
        """Everything a filter matches against, lower-case."""
        return " ".join([self.name, self.state, self.corpus, self.tokenizer, self.origin, self.notes, *self.tags,
                         self.device, self.problem]).lower()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


# -- listing ---------------------------------------------------------------------------------


def run_folders(folders: Iterable[str | Path]) -> list[Path]:
    """The run folders in ``folders``: each folder that is a run itself, else its sub-folders that look like
    runs (a ``run.json``, or the metrics or checkpoints a run leaves: those are listed as broken)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        candidates = [folder] if (folder / RUN_FILE).exists() else _children(folder)
        for path in candidates:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out


def _children(folder: Path) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if any(os.path.exists(os.path.join(entry.path, name)) for name in (RUN_FILE, METRICS_FILE, CHECKPOINTS_DIR)):
            out.append(path)
    return sorted(out, key=lambda p: p.name)


def list_runs(folders: Iterable[str | Path], write_summaries: bool = True) -> list[RunEntry]:
    """A :class:`RunEntry` for every run in ``folders`` (see :func:`run_folders`), newest first."""
    entries = [read_entry(path, write_summaries) for path in run_folders(folders)]
    return sorted(entries, key=lambda e: (e.created, e.name), reverse=True)


def read_entry(run_dir: str | Path, write_summary: bool = True) -> RunEntry:
    """The library row of one run folder; a folder that cannot be read gives a ``broken`` row saying why."""
    run_dir = Path(run_dir)
    try:
        return _entry(run_dir, write_summary)
    except RunError as exc:
        return RunEntry(path=run_dir, name=run_dir.name, state="broken", problem=str(exc))
    except OSError as exc:
        return RunEntry(path=run_dir, name=run_dir.name, state="broken",
                        problem=f"cannot read {exc.filename or run_dir}: {exc.strerror or exc}")


def _load_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RunError(f"no {RUN_FILE}: not a complete run folder") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{RUN_FILE} is corrupt ({str(exc).splitlines()[0]})") from None
    if not isinstance(record, dict) or not isinstance(record.get("schema_version"), int):
        raise RunError(f"{RUN_FILE} is corrupt: no schema_version")
    if record["schema_version"] > RUN_SCHEMA:
        raise RunError(f"made by a newer ShiftStudio (run schema {record['schema_version']}; this one reads up to "
                       f"{RUN_SCHEMA}): update ShiftStudio to open it")
    if not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
        raise RunError(f"{RUN_FILE} is corrupt: no config or data section")
    return record


def _entry(run_dir: Path, write_summary: bool) -> RunEntry:
    record = _load_record(run_dir)
    config = record["config"]
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    train_cfg = config.get("train") if isinstance(config.get("train"), dict) else {}
    data = record["data"]
    corpus = data_cfg.get("corpus") or []
    corpus_text = ", ".join(Path(str(c)).name for c in corpus) if isinstance(corpus, list) else str(corpus)
    tokenizer = str(data.get("tokenizer_kind") or data_cfg.get("tokenizer", ""))
    if isinstance(data.get("vocab_size"), int):
        tokenizer += f" ({data['vocab_size']:,})"
    origin = record.get("origin")
    origin_text = f"fine-tuned from {origin.get('label') or origin.get('path')}" if isinstance(origin, dict) else "scratch"
    if isinstance(origin, dict) and isinstance(train_cfg.get("lora_rank"), int) and train_cfg["lora_rank"] > 0:
        origin_text += f" (LoRA r={train_cfg['lora_rank']})"
    model_info = record.get("model") if isinstance(record.get("model"), dict) else {}
    params = model_info.get("n_params") if isinstance(model_info.get("n_params"), int) else None

    held, holder = lock_state(run_dir)
    writable = write_summary and held != "held"  # (the trainer keeps its own run's summary)
    summary, _ = current_summary(run_dir, write=writable)
    entry = RunEntry(
        path=run_dir, name=run_dir.name, state="",  # the folder's name: what the file manager and a rename show created=str(record.get("created", "")),
        corpus=corpus_text or "sample", tokenizer=tokenizer, origin=origin_text, params=params, steps=summary.steps,
        max_iters=summary.max_iters or int(train_cfg.get("max_iters") or 0), tokens=summary.tokens,
        best_val=summary.best_val, last_val=summary.last_val, time_s=summary.time_s, device=summary.device,
        holder=holder.describe() if holder else "", shift=int(model_cfg.get("shift") or 1),
    )
    entry.notes, entry.tags = read_notes(run_dir)
    entry.state, entry.problem = _state(summary, held)
    if entry.state not in ("running", "paused"):
        problem, changed = _newest_checkpoint_problem(run_dir, summary)
        if changed and writable:
            store_summary(run_dir, summary)
        if problem:
            entry.state, entry.problem = "broken", problem
    return entry


def _state(summary: Summary, lock: str) -> tuple[str, str]:
    if lock == "held":
        return ("paused" if summary.paused else "running"), ""
    if summary.last_event == "":
        return "new", ""
    if summary.last_event == "finished":
        return ("stopped" if summary.reason == "stopped" else "finished"), ""
    if summary.last_event == "failed":
        return "failed", summary.reason
    if lock == "stale":
        return "crashed", "its process ended without a final report (killed, crashed or the machine went down)"
    return "interrupted", "the log ends without a final report"


def _newest_checkpoint_problem(run_dir: Path, summary: Summary) -> tuple[str, bool]:
    """Why the newest checkpoint cannot be used ('' when it looks whole: its state.json and its files' sizes), and
    whether ``summary.checkpoint_check`` changed. The expected sizes are kept in the summary, so a listing re-reads
    a state.json only when it changed."""
    folder = os.path.join(run_dir, CHECKPOINTS_DIR)
    try:
        steps = [s for s in (step_of(e.name) for e in os.scandir(folder) if e.name.startswith(CHECKPOINT_PREFIX)) if s is not None]
    except OSError:
        return "", False
    if not steps:
        return "", False
    name = f"{CHECKPOINT_PREFIX}{max(steps)}"
    path = os.path.join(folder, name)
    state_file = os.path.join(path, STATE_FILE)
    changed = False
    try:
        st = os.stat(state_file)
    except OSError:
        return f"checkpoint {name} is cut short: its {STATE_FILE} is missing", False
    check = summary.checkpoint_check
    if not (isinstance(check, list) and len(check) == 4 and check[:3] == [name, st.st_mtime_ns, st.st_size]):
        try:
            with open(state_file, "rb") as f:
                state = json.loads(f.read())
            sizes = state["files"] if isinstance(state, dict) and isinstance(state.get("files"), dict) else {MODEL_FILE: None}
        except (OSError, ValueError, UnicodeDecodeError):
            return f"checkpoint {name} is cut short: its {STATE_FILE} is unreadable", False
        check = summary.checkpoint_check = [name, st.st_mtime_ns, st.st_size, sizes]
        changed = True
    for file, size in check[3].items():
        try:
            actual = os.stat(os.path.join(path, file)).st_size
        except OSError:
            return f"checkpoint {name} is cut short: {file} is missing", changed
        if isinstance(size, int) and actual != size:
            return f"checkpoint {name} is cut short: {file} has {actual:,} bytes of {size:,}", changed
    return "", changed


def filter_runs(entries: list[RunEntry], text: str) -> list[RunEntry]:
    """Entries whose name, state, corpus, tokenizer, origin, notes, tags or device contain every word of
    ``text`` (case-insensitive)."""
    words = text.lower().split()
    return [e for e in entries if all(w in e.text() for w in words)]


def sort_runs(entries: list[RunEntry], key: str, descending: bool = False) -> list[RunEntry]:
    """Sorted by one of :data:`SORT_KEYS`; runs without the figure (no validation yet, say) go last."""
    if key not in SORT_KEYS:
        raise ValueError(f"cannot sort by {key!r}: one of {', '.join(SORT_KEYS)}")
    have = [e for e in entries if getattr(e, key) is not None]
    missing = [e for e in entries if getattr(e, key) is None]
    return sorted(have, key=lambda e: getattr(e, key), reverse=descending) + missing


# -- notes and tags -------------------------------------------------------------------------------


def read_notes(run_dir: str | Path) -> tuple[str, list[str]]:
    try:
        data = json.loads(RunLayout(run_dir).notes_file.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return "", []
    if not isinstance(data, dict):
        return "", []
    notes = data.get("notes") if isinstance(data.get("notes"), str) else ""
    tags = [t for t in data.get("tags", []) if isinstance(t, str)] if isinstance(data.get("tags"), list) else []
    return notes, tags


def parse_tags(text: str) -> list[str]:
    """``"baseline, lr sweep,  k4"`` -> ``["baseline", "lr sweep", "k4"]``: comma-separated, trimmed, unique."""
    out: list[str] = []
    for tag in (t.strip() for t in text.split(",")):
        if tag and tag not in out:
            out.append(tag)
    return out


def write_notes(run_dir: str | Path, notes: str, tags: list[str]) -> None:
    try:
        io.write_json(RunLayout(run_dir).notes_file, {"notes": notes, "tags": list(tags)})
    except OSError as exc:
        raise RunError(f"could not save the notes of {Path(run_dir).name}: {exc.strerror or exc}") from None


# -- rename, delete, fork -------------------------------------------------------------------------

_BAD_NAME = re.compile(r'[/\\:*?"<>|\x00-\x1f]')


def check_not_training(run_dir: str | Path, action: str) -> None:
    """Raise :class:`RunError` when a live process trains the run (``action``: "delete", "rename", ...)."""
    state, holder = lock_state(run_dir)
    if state == "held":
        who = holder.describe() if holder else "another process"
        raise RunError(f"cannot {action} {Path(run_dir).name}: it is training ({who}); stop it first")


def rename_run(run_dir: str | Path, new_name: str) -> Path:
    """Rename the run's folder (and its name in run.json); returns the new path."""
    run_dir = Path(run_dir)
    name = new_name.strip()
    if not name or name in (".", "..") or _BAD_NAME.search(name):
        raise RunError(f"{new_name!r} cannot be a folder name: use letters, digits, spaces, '-', '_' or '.'")
    target = run_dir.with_name(name)
    if target == run_dir:
        return run_dir
    if target.exists():
        raise RunError(f"{target} already exists: pick another name")
    check_not_training(run_dir, "rename")
    record = _load_record(run_dir)
    try:
        os.rename(run_dir, target)
    except OSError as exc:
        raise RunError(f"could not rename {run_dir.name} to {name}: {exc.strerror or exc}") from None
    record["name"] = name
    try:
        io.write_json(target / RUN_FILE, record)
    except OSError:
        pass  # the folder's name is what the library shows first; run.json keeps the old name
    return target
