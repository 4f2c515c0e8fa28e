"""Throughput and latency, focal against thumbor 7.8, both run here on 127.0.0.1.

Same source images, same concurrency, runs alternating between the two servers (A/B, then B/A
for the next cell). Operations:

    fit512-jpeg    resize to fit 512x512, JPEG q80
    cover256-jpeg  cover crop 256x256 (centre), JPEG q80
    fit512-webp    resize to fit 512x512, WebP q80
    face256-jpeg   face crop 256x256: focal gravity=face, thumbor smart with its face detector

Two modes: cold (no variant cache, no detection cache, thumbor without storage or result
storage) and warm (focal's variant cache on; thumbor's file result storage on; every URL asked
once before measuring). Requests/s and p50/p95/p99 latency at each concurrency, and the servers'
own CPU time per request (from /proc; the load generator runs on the same cores).

    .venv/bin/python benchmarks/throughput.py [--seconds 10] [--concurrency 1,2,8]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

import harness
import loadgen
import prepare

COMMAND = ".venv/bin/python benchmarks/throughput.py"
THUMBOR_PROCESSES = 2  # one per core, as focal's default image threads


@dataclass(frozen=True)
class Operation:
    name: str
    folder: str
    focal: str  # Cloudflare-style options
    thumbor: str  # the part of thumbor's URL before the source path
    describe: str


OPERATIONS = (
    Operation(
        "fit512-jpeg",
        "large",
        "width=512,height=512,fit=scale-down,format=jpeg,quality=80,metadata=none",
        "fit-in/512x512/filters:quality(80)",
        "resize to fit 512x512, JPEG q80",
    ),
    Operation(
        "cover256-jpeg",
        "large",
        "width=256,height=256,fit=cover,format=jpeg,quality=80,metadata=none",
        "256x256/filters:quality(80)",
        "cover crop 256x256, JPEG q80",
    ),
    Operation(
        "fit512-webp",
        "large",
        "width=512,height=512,fit=scale-down,format=webp,quality=80,metadata=none",
        "fit-in/512x512/filters:quality(80):format(webp)",
        "resize to fit 512x512, WebP q80",
    ),
    Operation(
        "face256-jpeg",
        "face",
        "width=256,height=256,fit=cover,gravity=face,format=jpeg,quality=80,metadata=none",
        "256x256/smart/filters:quality(80)",
        "face crop 256x256, JPEG q80 (focal gravity=face; thumbor smart + face detector)",
    ),
)


def urls(server: str, op: Operation) -> list[str]:
    sources = prepare.inputs(op.folder)
    if server == "focal":
        return [f"/cdn-cgi/image/{op.focal}/{s}" for s in sources]
    return [f"/unsafe/{op.thumbor}/{s}" for s in sources]


def check_and_prime(base: str, paths: Sequence[str]) -> dict[str, Any]:
    """Ask every URL once (this also fills the caches of a warm run); the output sizes."""
    sizes = []
    types = set()
    with httpx.Client(base_url=base, timeout=120) as client:
        for path in paths:
            reply = client.get(path)
            if reply.status_code != 200:
                raise RuntimeError(f"{base}{path}: HTTP {reply.status_code} {reply.text[:300]}")
            sizes.append(len(reply.content))
            types.add(reply.headers.get("content-type", "?"))
    return {"bytes": sizes, "content_types": sorted(types)}


def server_cpu(server: harness.Server) -> float:
    pids = [server.pid, *harness.children(server.pid)]
    return sum(harness.cpu_seconds(p) for p in pids)


def measure(
    server: harness.Server, paths: Sequence[str], connections: int, seconds: float
) -> dict[str, Any]:
    before = server_cpu(server)
    load = loadgen.run(server.base, paths, connections, seconds)
    used = server_cpu(server) - before
    row = load.to_json()
    row["server_cpu_ms_per_request"] = (
        round(1000 * used / load.requests, 2) if load.requests else None
    )
    return row


def run_mode(
    mode: str,
    ops: Sequence[Operation],
    concurrency: Sequence[int],
    seconds: float,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cache = mode == "warm"
    focal = harness.focal_server(harness.INPUTS, cache=cache, tag=f"tp-focal-{mode}")
    thumbor = harness.thumbor_server(
        harness.INPUTS, cache=cache, processes=THUMBOR_PROCESSES, tag=f"tp-thumbor-{mode}"
    )
    cells: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    flip = False
    with harness.running(focal), harness.running(thumbor):
        servers = {"focal": focal, "thumbor": thumbor}
        for op in ops:
            for name, server in servers.items():
                outputs[f"{op.name}/{name}"] = check_and_prime(server.base, urls(name, op))
            for connections in concurrency:
                order = ["thumbor", "focal"] if flip else ["focal", "thumbor"]
                flip = not flip
                for name in order:
                    row = measure(servers[name], urls(name, op), connections, seconds)
                    row.update({"mode": mode, "op": op.name, "server": name})
                    cells.append(row)
                    log(
                        f"  {mode:4s} {op.name:14s} c={connections} {name:7s} "
                        f"{row['rps']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                        f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}"
                    )
    return cells, outputs


def ratios(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """focal / thumbor requests per second, per cell."""
    out = []
    index = {(c["mode"], c["op"], c["connections"], c["server"]): c for c in cells}
    for (mode, op, conn, server), cell in index.items():
        other = index.get((mode, op, conn, "thumbor"))
        if server != "focal" or other is None or not other["rps"]:
            continue
        out.append(
            {
                "mode": mode,
                "op": op,
                "connections": conn,
                "focal_rps": cell["rps"],
                "thumbor_rps": other["rps"],
                "rps_ratio": round(cell["rps"] / other["rps"], 3),
                "p50_ratio": round(cell["p50_ms"] / other["p50_ms"], 3)
                if other["p50_ms"]
                else None,
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="focal vs thumbor throughput and latency.")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one measured cell")
    parser.add_argument("--concurrency", default="1,2,8")
    parser.add_argument("--ops", default=",".join(o.name for o in OPERATIONS))
    parser.add_argument("--modes", default="cold,warm")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    ops = [o for o in OPERATIONS if o.name in args.ops.split(",")]
    started = time.monotonic()
    cells: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    for mode in args.modes.split(","):
        found, sizes = run_mode(
            mode, ops, concurrency, args.seconds, lambda s: print(s, flush=True)
        )
        cells += found
        outputs[mode] = sizes
    if args.no_write:
        return 0
    data = {
        "setup": {
            "seconds_per_cell": args.seconds,
            "concurrency": concurrency,
            "load_generator": "wrk" if loadgen.wrk_available() else "python-httpx",
            "thumbor": f"thumbor 7.8, file loader, --processes {THUMBOR_PROCESSES}, PIL engine, "
            "cold: no storage / no result storage; warm: file result storage",
            "focal": "python -m focal serve, default threads (one per core); cold: "
            "--no-cache-enabled --detection-cache-entries 0; warm: variant cache on",
            "operations": {
                o.name: {"describe": o.describe, "focal": o.focal, "thumbor": o.thumbor}
                for o in ops
            },
            "inputs": {o.name: prepare.inputs(o.folder) for o in ops},
        },
        "seconds": round(time.monotonic() - started, 1),
        "cells": cells,
        "ratios": ratios(cells),
        "outputs": outputs,
    }
    harness.write_result("throughput", data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
