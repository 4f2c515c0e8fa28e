"""Run every benchmark of focal against thumbor 7.8 and the libvips floor, then draw the charts
and write docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only crop_quality,throughput,...]

First it installs what the benchmarks need beyond the project: Debian's wrk, libvips-tools, node
and npm (apt-get, when run as root), a separate virtual environment under benchmarks/work/venv
with thumbor 7.8, opencv-python-headless < 5 (thumbor's face detector), matplotlib and py-spy,
and (benchmarks/threeway.py, from npm) ipx 3 under benchmarks/work/ipx.
Then the face model (`focal models fetch`) and the inputs (benchmarks/prepare.py). Every server
listens on 127.0.0.1 only; every step is bounded in time and stops by itself. About 30 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
VENV = WORK / "venv"
BENCH_PY = VENV / "bin" / "python"
PACKAGES = ["thumbor==7.8.0", "opencv-python-headless<5", "matplotlib>=3.8", "py-spy"]
APT = {"wrk": "wrk", "vipsthumbnail": "libvips-tools", "node": "nodejs", "npm": "npm"}

# the configurations of docs/benchmarks.md's three-way table: with the fast extra, without, and
# with two workers
THREEWAY_ARGS = ["--seconds", "5", "--rounds", "3", "--concurrency", "1,2,8"]
THREEWAY_ARGS += ["--focal", "focal=--loop uvloop --http httptools"]
THREEWAY_ARGS += ["--focal", "h11=--loop asyncio --http h11"]
THREEWAY_ARGS += ["--focal", "w2=--workers 2 --loop uvloop --http httptools"]

# name, script, arguments (normal), arguments (--quick), time limit in seconds
STEPS: tuple[tuple[str, str, list[str], list[str], int], ...] = (
    ("crop_quality", "crop_quality.py", [], ["--limit", "20"], 1200),
    (
        "throughput",
        "throughput.py",
        ["--seconds", "10"],
        ["--seconds", "3", "--concurrency", "1,8"],
        1500,
    ),
    (
        "threeway",
        "threeway.py",
        THREEWAY_ARGS,
        ["--seconds", "2", "--rounds", "1", "--concurrency", "2"],
        2400,
    ),
    ("floor", "floor.py", [], ["--repeat", "3", "--cli-repeat", "1"], 600),
    ("breakdown", "breakdown.py", [], ["--repeat", "5"], 600),
    (
        "face_cost",
        "face_cost.py",
        [],
        ["--rounds", "1", "--passes", "1", "--sides", "1024,640"],
        600,
    ),
    ("startup", "startup.py", [], ["--repeat", "3"], 300),
    (
        "memory",
        "memory.py",
        ["--max-seconds", "330"],
        ["--requests", "2000", "--max-seconds", "90"],
        600,
    ),
)


def say(text: str) -> None:
    print(f"[run_all {time.strftime('%H:%M:%S')}] {text}", flush=True)


def ensure_apt() -> None:
    missing = [pkg for tool, pkg in APT.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(f"not installed: {', '.join(missing)} (needs root and apt-get); fallbacks are used")
        return
    say(f"apt-get install {' '.join(missing)}")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600, **quiet)  # type: ignore[call-overload]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], check=False, timeout=900, env=env, **quiet
    )  # type: ignore[call-overload]


def base_python() -> str:
    """The interpreter the project's venv was made from (the benchmarks' venv uses the same)."""
    return str(Path(sys.executable).resolve())


def ensure_venv() -> None:
    marker = VENV / ".installed"
    wanted = "\n".join(PACKAGES)
    if marker.exists() and marker.read_text() == wanted and BENCH_PY.exists():
        return
    say(f"creating {VENV.relative_to(ROOT)} with {', '.join(PACKAGES)}")
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([base_python(), "-m", "venv", str(VENV)], check=True, timeout=300)
    pip = [str(BENCH_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PACKAGES], check=True, timeout=1800)
    marker.write_text(wanted)


def ensure_model() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "focal", "models", "fetch"], check=False, timeout=900
    )
    if done.returncode != 0:
        say("focal models fetch failed: the face benchmarks will report the missing model")


def run_step(name: str, script: str, args: Sequence[str], limit: int) -> tuple[str, float]:
    say(f"{name}: {script} {' '.join(args)} (at most {limit} s)")
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / script), *args], cwd=ROOT, timeout=limit, check=False
        )
        status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
    except subprocess.TimeoutExpired:
        status = f"stopped after {limit} s"
    return status, time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: short cells, nothing written"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated steps: " + ",".join(s[0] for s in STEPS)
    )
    parser.add_argument("--no-setup", action="store_true", help="skip apt-get, venv and model")
    args = parser.parse_args(argv)
    chosen = [s for s in STEPS if not args.only or s[0] in args.only.split(",")]
    started = time.monotonic()
    if not args.no_setup:
        ensure_apt()
        ensure_venv()
        ensure_model()
    subprocess.run([sys.executable, str(BENCH / "prepare.py")], cwd=ROOT, check=True, timeout=600)
    report: list[str] = []
    for name, script, normal, quick, limit in chosen:
        chosen_args = [*quick, "--no-write"] if args.quick else normal
        status, seconds = run_step(name, script, chosen_args, limit)
        report.append(f"{name:14s} {status:24s} {seconds:6.0f} s")
    if args.quick:
        say("quick run: nothing written (results, charts and docs are left as they were)")
    elif BENCH_PY.exists():
        subprocess.run(
            [str(BENCH_PY), str(BENCH / "charts.py")], cwd=ROOT, check=False, timeout=300
        )
    if not args.quick:
        subprocess.run(
            [sys.executable, str(BENCH / "report.py")], cwd=ROOT, check=False, timeout=120
        )
    say(f"done in {time.monotonic() - started:.0f} s")
    for line in report:
        print("  " + line)
    return 0 if all(" ok " in f" {line} " for line in report) else 1


if __name__ == "__main__":
    sys.exit(main())
