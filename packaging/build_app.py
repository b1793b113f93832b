"""Build the stand-alone one-folder app with PyInstaller, then check it with its own self-test.

    python packaging/build_app.py            # build dist/ShiftStudio/, run its --self-test, report
    python packaging/build_app.py --check    # only run the self-test of an existing build

The build uses the torch, Qt and Python of the environment running this script
(build it from a virtual environment with the CPU build of torch: a CUDA torch
adds gigabytes). What goes in is in ``bundle_config.py``; the recipe is
``shiftstudio.spec``. The check runs ``dist/ShiftStudio/ShiftStudio gui
--self-test`` offscreen with a bare environment (PATH=/usr/bin:/bin, no
PYTHONPATH, no virtual environment, a temporary working folder), so it proves
the folder runs on its own; then it reports the folder's size, the time to the
window shown and the self-test's total time (two runs: the first after the
build, then a warm one). The numbers are also written to
``dist/ShiftStudio-build.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bundle_config as bc  # noqa: E402


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of ``folder``, links not followed."""
    total = files = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            files += 1
    return total, files


def largest_parts(folder: Path, count: int = 8) -> list[tuple[str, int]]:
    sizes: dict[str, int] = {}
    internal = folder / "_internal"
    base = internal if internal.is_dir() else folder
    for path in base.rglob("*"):
        if path.is_file() and not path.is_symlink():
            top = path.relative_to(base).parts[0]
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    return sorted(sizes.items(), key=lambda item: -item[1])[:count]


def build(dist: Path, work: Path) -> float:
    if importlib.util.find_spec("PyInstaller") is None:
        raise SystemExit("build_app: PyInstaller is not installed here: python -m pip install pyinstaller")
    import torch

    if torch.version.cuda:
        print(f"build_app: warning: this torch is a CUDA build ({torch.version.cuda}); the bundle will be very large",
              file=sys.stderr)
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
               "--distpath", str(dist), "--workpath", str(work), str(HERE / "shiftstudio.spec")]
    print("build_app: " + " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started


def strip_libraries(folder: Path) -> int:
    """Strip the symbol tables of ``bundle_config.STRIP`` (Linux, with binutils' ``strip``); returns bytes saved."""
    tool = shutil.which("strip")
    if not sys.platform.startswith("linux") or tool is None:
        return 0
    saved = 0
    for name in bc.STRIP:
        path = folder / "_internal" / name
        if path.is_file() and not path.is_symlink():
            before = path.stat().st_size
            subprocess.run([tool, "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
    return saved


def bare_env(home: Path) -> dict[str, str]:
    """What a user's double-click would have, and nothing of this build's Python."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}
    for key in ("SYSTEMROOT", "TEMP", "TMP"):  # (Windows needs these to start at all)
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def self_test(exe: Path, timeout: float) -> dict:
    """Run the built app's self-test in a bare environment; its report as a dict (exit code, rows, wall time)."""
    with tempfile.TemporaryDirectory(prefix="shiftstudio-bundle-check-") as tmp:
        started = time.perf_counter()
        done = subprocess.run([str(exe), "gui", "--self-test", "--timeout", str(int(timeout))], cwd=tmp,
                              env=bare_env(Path(tmp)), capture_output=True, text=True, timeout=timeout + 60)
        wall = time.perf_counter() - started
        leftovers = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
    rows = {}
    for line in done.stdout.splitlines()[1:]:
        key, _, value = line.strip().partition(":")
        rows[key.strip()] = value.strip()
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "rows": rows,
            "wall_s": wall, "leftovers": leftovers}


def seconds(text: str, pattern: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the one-folder ShiftStudio app and check it.")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the app folder goes (default dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller's work folder")
    parser.add_argument("--check", action="store_true", help="do not build: only check an existing build")
    parser.add_argument("--timeout", type=float, default=600, help="the self-test's time limit in seconds")
    args = parser.parse_args()

    build_s = None if args.check else build(args.dist, args.work)
    folder = args.dist / bc.APP_NAME
    if not args.check:
        saved = strip_libraries(folder)
        if saved:
            print(f"build_app: stripped {', '.join(bc.STRIP)}: {saved / 1e6:,.0f} MB less")
    exe = folder / (bc.APP_NAME + (".exe" if sys.platform == "win32" else ""))
    if not exe.is_file():
        raise SystemExit(f"build_app: no app at {exe}: build it first (without --check)")
    size, files = folder_size(folder)
    print(f"\nbuilt: {folder} · {size / 1e6:,.0f} MB in {files:,} files" + (f" · build {build_s / 60:.1f} min" if build_s else ""))
    for name, part in largest_parts(folder):
        print(f"  {part / 1e6:8,.0f} MB  {name}")

    runs = []
    for attempt in ("first", "warm"):
        result = self_test(exe, args.timeout)
        runs.append(result)
        if result["returncode"] != 0:
            print(f"\nself-test ({attempt} run) FAILED, exit {result['returncode']}:\n{result['stdout']}{result['stderr']}",
                  file=sys.stderr)
            return 1
        if result["leftovers"]:
            print(f"self-test left files in its working folder: {result['leftovers']}", file=sys.stderr)
            return 1
    print("\n" + runs[-1]["stdout"].rstrip())
    summary = {
        "platform": platform.platform(),
        "folder": str(folder),
        "size_bytes": size,
        "files": files,
        "build_s": build_s,
        "runs": [{
            "window_shown_s": seconds(r["rows"].get("window", ""), r"shown ([\d.]+) s"),
            "window_ready_s": seconds(r["rows"].get("window", ""), r"ready ([\d.]+) s"),
            "self_test_total_s": seconds(r["rows"].get("total", ""), r"([\d.]+) s"),
            "wall_s": round(r["wall_s"], 2),
            "rows": r["rows"],
        } for r in runs],
    }
    for name, r in zip(("first", "warm"), summary["runs"]):
        print(f"\n{name} run: window shown {r['window_shown_s']} s after start · ready {r['window_ready_s']} s · "
              f"self-test {r['self_test_total_s']} s (wall {r['wall_s']} s)")
    report = args.dist / f"{bc.APP_NAME}-build.json"
    report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"size {size / 1e6:,.0f} MB · numbers in {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
