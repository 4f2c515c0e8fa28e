"""What the hardened HTTP front (focal.server.front) costs: requests per second of this tree's
``focal serve`` against the same server before the front (uvicorn's own httptools protocol, the
source of ``--old-rev`` exported from git), in interleaved rounds on one machine.

Two jobs, each with 8 keep-alive connections of wrk (or the Python load generator):
  cached   /cdn-cgi/image/width=256/astronaut.jpg, the variant cache on (answered from memory)
  cold     /cdn-cgi/image/width=512,format=jpeg,quality=80/<photo>, caches off (a resize each)
Each round runs every job on both servers, the order swapped from round to round. Reported per
job: the medians of req/s and of the server's CPU time per request (its own user + system time
over the run, from /proc: the client's cost and other processes on the machine left out), and the
medians of the per-round ratios new / old.

    .venv/bin/python benchmarks/experiments/front_ab.py  # writes benchmarks/results/front_ab.json
    .venv/bin/python benchmarks/experiments/front_ab.py --rounds 2 --seconds 4
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
import loadgen

PHOTOS = ("astronaut.jpg", "coffee.jpg", "grace_hopper.jpg", "chelsea.jpg")
JOBS = {
    "cached": ["/cdn-cgi/image/width=256/astronaut.jpg"],
    "cold": [f"/cdn-cgi/image/width=512,format=jpeg,quality=80/{p}" for p in PHOTOS],
}


def before_front() -> str:
    """The commit before focal.server.front was added."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "-1", "--", "src/focal/server/front.py"],
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return added + "^"


def export_source(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=harness.ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def server(name: str, root: Path, cached: bool, src: Path | None) -> harness.Server:
    extra = ["--no-face"] if cached else ["--no-face", "--detection-cache-entries", "0"]
    made = harness.focal_server(root, cache=cached, tag=f"front-ab-{name}", extra=extra)
    if src is not None:
        made.env = {"PYTHONPATH": str(src)}
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old-rev", default=None, help="default: the commit before the front")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    old_rev = args.old_rev or before_front()
    scratch = Path(tempfile.mkdtemp(prefix="focal-front-ab-"))
    try:
        old_src = export_source(old_rev, scratch)
        root = harness.fresh_state("front-ab-root") / "root"
        root.mkdir()
        for name in PHOTOS:
            shutil.copy(harness.ROOT / "src" / "focal" / "demo" / name, root / name)
        servers = {
            (job, front): server(f"{front}-{job}", root, job == "cached", src)
            for job in JOBS
            for front, src in (("new", None), ("old", old_src))
        }
        for running in servers.values():
            running.start()
        try:
            rows = measure(servers, args)
        finally:
            for running in servers.values():
                running.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(rows)
    for job, figures in summary.items():
        print(f"{job}: {figures}")
    harness.write_result(
        "front_ab",
        {"old_rev": old_rev, "rows": rows, "summary": summary},
        ".venv/bin/python benchmarks/experiments/front_ab.py",
    )
    return 0


def measure(
    servers: dict[tuple[str, str], harness.Server], args: argparse.Namespace
) -> list[dict[str, Any]]:
    for (job, _), running in servers.items():  # warm: every path once (cached: into the cache)
        loadgen.run(running.base, JOBS[job], 1, 1.0)
    rows = []
    for round_index in range(args.rounds):
        for job, paths in JOBS.items():
            order = ["new", "old"] if round_index % 2 == 0 else ["old", "new"]
            for front in order:
                running = servers[(job, front)]
                cpu = harness.cpu_seconds(running.pid)
                load = loadgen.run(running.base, paths, args.connections, args.seconds)
                spent = harness.cpu_seconds(running.pid) - cpu
                row = {"round": round_index, "job": job, "front": front, **load.to_json()}
                row["server_cpu_ms_per_request"] = round(spent * 1000 / max(1, load.requests), 3)
                print(row, flush=True)
                rows.append(row)
                time.sleep(0.5)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per job: the median req/s of each front and the median of the per-round ratios new/old."""
    out: dict[str, Any] = {}
    for job in JOBS:
        mine = [r for r in rows if r["job"] == job]
        by_round: dict[int, dict[str, float]] = {}
        for r in mine:
            by_round.setdefault(r["round"], {})[r["front"]] = r["rps"]
        ratios = [v["new"] / v["old"] for v in by_round.values() if v.get("old")]
        cpu: dict[int, dict[str, float]] = {}
        for r in mine:
            cpu.setdefault(r["round"], {})[r["front"]] = r["server_cpu_ms_per_request"]
        cpu_ratios = [v["new"] / v["old"] for v in cpu.values() if v.get("old")]
        out[job] = {
            "new_cpu_ms_per_request_median": harness.median(
                [r["server_cpu_ms_per_request"] for r in mine if r["front"] == "new"]
            ),
            "old_cpu_ms_per_request_median": harness.median(
                [r["server_cpu_ms_per_request"] for r in mine if r["front"] == "old"]
            ),
            "cpu_new_over_old_median": round(harness.median(cpu_ratios), 3),
            "cpu_new_over_old_range": [round(min(cpu_ratios), 3), round(max(cpu_ratios), 3)],
            "new_rps_median": round(
                harness.median([r["rps"] for r in mine if r["front"] == "new"]), 1
            ),
            "old_rps_median": round(
                harness.median([r["rps"] for r in mine if r["front"] == "old"]), 1
            ),
            "new_over_old_median": round(harness.median(ratios), 3),
            "new_over_old_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "errors": sum(r["errors"] for r in mine),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
