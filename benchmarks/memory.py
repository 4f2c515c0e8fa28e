"""Memory over a bounded soak: ``focal serve`` answers a fixed number of mixed requests (10,000 by
default, at concurrency 8; it also stops after ``--max-seconds``), while the resident memory of
the server process and of its detector worker is sampled from /proc.

Every request does the full work: the variant cache and the detection cache are off. The mix
cycles through resizes (JPEG, WebP), cover crops, PNGs with alpha, an animated GIF, saliency
crops, JSON descriptions and face crops (one request in twenty runs the face detector). The
animated GIF is written as animated WebP: libvips' GIF encoder alone takes about 1.4 s of CPU for
its 24 frames, which would make the soak mostly a GIF-encoding test.

Reported: peak and steady RSS of each process (steady = median while the first and the last
thousand requests ran), and the growth from the first to the last thousand. Goal: growth under
10% and under 150 MiB.

    .venv/bin/python benchmarks/memory.py [--requests 10000] [--concurrency 8]

``--preload LIB`` runs the server (and its detector worker) with LD_PRELOAD=LIB, e.g. Debian's
jemalloc (/usr/lib/x86_64-linux-gnu/libjemalloc.so.2), written to ``--out`` (default memory).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import harness
import loadgen
import prepare

COMMAND = ".venv/bin/python benchmarks/memory.py"
MIB = 1024 * 1024
GOAL_SHARE = 0.10
GOAL_MIB = 150
WINDOW = 1000


def mix() -> list[str]:
    """Twenty URLs, in a fixed order; one of them a face crop."""
    large = prepare.inputs("large")
    face = prepare.inputs("face")
    alpha = prepare.inputs("alpha")
    anim = prepare.inputs("anim")
    cf = "/cdn-cgi/image/"
    urls = [f"{cf}width=512,height=512,format=jpeg,quality=80/{s}" for s in large]
    urls += [f"{cf}width=256,height=256,fit=cover,format=webp/{s}" for s in large]
    urls += [f"{cf}width=400,format=png/{s}" for s in alpha]
    urls += [f"{cf}width=300,height=300,fit=pad,background=white,format=jpeg/{s}" for s in alpha]
    urls += [f"{cf}width=160,format=webp/{s}" for s in anim]  # animated WebP out
    urls += [f"{cf}width=160,anim=false,format=webp/{s}" for s in anim]
    urls += [f"{cf}width=320,height=240,fit=cover,gravity=auto,format=jpeg/{s}" for s in large[:2]]
    urls += [f"{cf}width=640,format=json/{s}" for s in large[:1]]
    urls += [f"{cf}width=200,height=200,fit=cover,sharpen=1,format=jpeg/{s}" for s in face[:2]]
    urls += [f"{cf}width=800,rotate=90,format=webp,quality=70/{s}" for s in face[2:3]]
    urls += [f"{cf}width=256,height=256,fit=cover,gravity=face,format=jpeg/{face[-1]}"]
    return urls


@dataclass
class Samples:
    """RSS samples: (seconds since start, requests done, server RSS, detector worker RSS)."""

    rows: list[tuple[float, int, int, int]] = field(default_factory=list)
    done: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def worker_pids(server: harness.Server) -> list[int]:
    """The server's detector worker processes (its children, but multiprocessing's resource
    tracker)."""
    found = []
    for pid in harness.children(server.pid):
        line = harness.cmdline(pid)
        if "resource_tracker" not in line and ("detector" in line or "spawn_main" in line):
            found.append(pid)
    return found


def sample(server: harness.Server, samples: Samples, every: float) -> None:
    start = time.monotonic()
    while not samples.stop.is_set():
        workers = worker_pids(server)
        samples.rows.append(
            (
                round(time.monotonic() - start, 2),
                samples.done,
                harness.rss_bytes(server.pid),
                sum(harness.rss_bytes(p) for p in workers),
            )
        )
        samples.stop.wait(every)


def window(rows: Sequence[tuple[float, int, int, int]], lo: int, hi: int, col: int) -> float:
    values = [r[col] for r in rows if lo <= r[1] < hi]
    return harness.median(values) if values else float("nan")


def summarise(rows: Sequence[tuple[float, int, int, int]], total: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, name in ((2, "server"), (3, "detector_worker")):
        first = window(rows, 0, WINDOW, col)
        last = window(rows, max(0, total - WINDOW), total + 1, col)
        growth = last - first
        out[name] = {
            "peak_mib": round(max(r[col] for r in rows) / MIB, 1),
            "steady_first_1000_mib": round(first / MIB, 1),
            "steady_last_1000_mib": round(last / MIB, 1),
            "growth_mib": round(growth / MIB, 1),
            "growth_share": round(growth / first, 4) if first else None,
            "goal_met": bool(first) and growth / first < GOAL_SHARE and growth / MIB < GOAL_MIB,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Memory of focal serve over a bounded soak.")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=0.25, help="sampling period (s)")
    parser.add_argument("--preload", default="", help="LD_PRELOAD of the server (an allocator)")
    parser.add_argument("--out", default="memory", help="result name under benchmarks/results")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    urls = mix()
    server = harness.focal_server(harness.INPUTS, cache=False, detections=False, tag="soak")
    if args.preload:
        server.env = {"LD_PRELOAD": args.preload}
    samples = Samples()
    statuses: dict[int, int] = {}

    def on_done(index: int, elapsed_ms: float, status: int) -> None:
        samples.done += 1
        statuses[status] = statuses.get(status, 0) + 1
        if samples.done % 1000 == 0:
            print(
                f"  {samples.done} requests, server {harness.rss_bytes(server.pid) / MIB:.0f} MiB",
                flush=True,
            )

    with harness.running(server):
        sampler = threading.Thread(target=sample, args=(server, samples, args.every), daemon=True)
        sampler.start()
        try:
            load = loadgen.run_python(
                server.base,
                urls,
                args.concurrency,
                seconds=args.max_seconds,
                count=args.requests,
                on_done=on_done,
            )
        finally:
            samples.stop.set()
            sampler.join(timeout=5)
    summary = summarise(samples.rows, samples.done)
    for name, row in summary.items():
        print(f"  {name}: {row}")
    print(f"  statuses {statuses}, {load.rps:.1f} req/s, p50 {load.p50_ms:.0f} ms", flush=True)
    if args.no_write:
        return 0
    data = {
        "setup": {
            "requests_asked": args.requests,
            "concurrency": args.concurrency,
            "max_seconds": args.max_seconds,
            "server": "python -m focal serve --no-cache-enabled --detection-cache-entries 0 "
            "(other settings default)",
            "preload": args.preload,
            "urls": urls,
            "goal": f"growth < {GOAL_SHARE:.0%} and < {GOAL_MIB} MiB",
        },
        "load": load.to_json(),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "summary": summary,
        "samples": [list(r) for r in samples.rows[:: max(1, len(samples.rows) // 600)]],
        "sample_columns": ["seconds", "requests_done", "server_rss_bytes", "worker_rss_bytes"],
    }
    harness.write_result(args.out, data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
