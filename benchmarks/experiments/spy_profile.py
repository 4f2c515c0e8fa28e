"""Profile ``focal serve`` under load: py-spy samples the server (and its children) while wrk (or
the Python load generator) sends one operation of benchmarks/throughput.py; prints the functions
that hold the most samples, self and inclusive, and writes the raw stacks.

    .venv/bin/python benchmarks/experiments/spy_profile.py --op fit512-jpeg --mode warm \
        [--seconds 10]

py-spy lives in the benchmarks' own environment (benchmarks/work/venv, made by run_all.py).
Output: benchmarks/results/profile_<op>_<mode>.txt (top functions) and the collapsed stacks in
benchmarks/work/.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
import loadgen
import prepare
import throughput

PY_SPY = harness.BENCH_VENV / "bin" / "py-spy"
TOP = 25


def top_functions(
    collapsed: str, count: int = TOP
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(self, inclusive, total samples) from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return own.most_common(count), inclusive.most_common(count), total


def loop_floor_job(name: str, runs: int) -> None:
    """Run one job of benchmarks/floor.py through focal.pipeline.transform, ``runs`` times."""
    import pyvips

    import floor
    from focal.options import parse_options
    from focal.pipeline import transform

    pyvips.cache_set_max(0)
    job = next(j for j in (*floor.JOBS, *floor.ANIM_JOBS) if j.name == name)
    folder = "anim" if job in floor.ANIM_JOBS else "large"
    sources = [(harness.INPUTS / r).read_bytes() for r in prepare.inputs(folder)]
    options = parse_options(job.focal)
    for _ in range(runs):
        for data in sources:
            transform(data, options)


def profile_floor_job(name: str, runs: int) -> int:
    """py-spy over an in-process loop of one floor job (Python frames, with libvips' time under
    the call that waits for it)."""
    stacks = harness.WORK / f"profile_{name}.collapsed"
    record = [
        str(PY_SPY), "record", "--rate", "200", "--format", "raw", "-o", str(stacks), "--",
        sys.executable, __file__, "--loop-floor-job", name, "--runs", str(runs),
    ]  # fmt: skip
    subprocess.run(record, check=True, timeout=900)
    own, inclusive, total = top_functions(stacks.read_text())
    return write_report(
        f"profile_{name}",
        f"# py-spy, focal.pipeline.transform in process, floor job {name}, {runs} runs, "
        f"{total} samples",
        f"# command: .venv/bin/python benchmarks/experiments/spy_profile.py --floor-job {name}",
        own,
        inclusive,
        total,
    )


def write_report(
    name: str,
    title: str,
    command: str,
    own: list[tuple[str, int]],
    inclusive: list[tuple[str, int]],
    total: int,
) -> int:
    lines = [
        title,
        command,
        "## self",
        *(f"{100 * n / max(total, 1):5.1f}%  {frame}" for frame, n in own),
        "## inclusive",
        *(f"{100 * n / max(total, 1):5.1f}%  {frame}" for frame, n in inclusive),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = harness.RESULTS / f"{name}.txt"
    out.write_text(text)
    print(f"wrote {out.relative_to(harness.ROOT)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of focal serve under load.")
    parser.add_argument("--floor-job", default="", help="profile a floor.py job in process")
    parser.add_argument("--loop-floor-job", default="", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--op", default="fit512-jpeg", choices=[o.name for o in throughput.OPERATIONS]
    )
    parser.add_argument("--mode", default="warm", choices=["cold", "warm"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if args.loop_floor_job:
        loop_floor_job(args.loop_floor_job, args.runs)
        return 0
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} missing: run benchmarks/run_all.py once (it installs py-spy)")
    if args.floor_job:
        return profile_floor_job(args.floor_job, args.runs)
    prepare.prepare()
    op = next(o for o in throughput.OPERATIONS if o.name == args.op)
    server = harness.focal_server(harness.INPUTS, cache=args.mode == "warm", tag="profile")
    stacks = harness.WORK / f"profile_{args.op}_{args.mode}.collapsed"
    urls = throughput.urls("focal", op)
    with harness.running(server):
        throughput.check_and_prime(server.base, urls)
        record = [
            str(PY_SPY), "record", "--pid", str(server.pid), "--subprocesses", "--nonblocking",
            "--duration", str(args.seconds), "--rate", "200", "--format", "raw", "-o", str(stacks),
        ]  # fmt: skip
        spy = threading.Thread(target=subprocess.run, args=(record,), kwargs={"check": False})
        spy.start()
        load = loadgen.run(server.base, urls, args.concurrency, args.seconds)
        spy.join(timeout=args.seconds + 60)
    own, inclusive, total = top_functions(stacks.read_text() if stacks.exists() else "")
    return write_report(
        f"profile_{args.op}_{args.mode}",
        f"# py-spy, focal serve, {args.op} {args.mode}, concurrency {args.concurrency}, "
        f"{load.rps:.1f} req/s, {total} samples",
        f"# command: .venv/bin/python benchmarks/experiments/spy_profile.py --op {args.op} "
        f"--mode {args.mode}",
        own,
        inclusive,
        total,
    )


if __name__ == "__main__":
    sys.exit(main())
