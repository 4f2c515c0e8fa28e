"""Closed-loop HTTP load: ``connections`` clients, each sending its next request as soon as the last
answer arrived, cycling through a list of paths, for a fixed time or a fixed count.

Two engines with one result shape: Debian's ``wrk`` (driven by a Lua script that cycles the paths
and prints its statistics as JSON), and a Python one on httpx + asyncio, used when wrk is missing
and for count-bounded runs (the memory soak). Latencies in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

import harness

WRK_SCRIPT = r"""
local paths = {}
local index = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  index = tonumber(args[2]) or 0
end
request = function()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Load:
    """One measured run."""

    engine: str
    connections: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(base: str, paths: Sequence[str], connections: int, seconds: float) -> Load:
    """``wrk`` with one thread per connection up to the core count."""
    with tempfile.TemporaryDirectory(prefix="focal-wrk-") as folder:
        script = Path(folder) / "cycle.lua"
        script.write_text(WRK_SCRIPT)
        listing = Path(folder) / "paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        threads = max(1, min(connections, os.cpu_count() or 1))
        cmd = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(script), base, "--", str(listing), "0",
        ]  # fmt: skip
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in raw if k.startswith("errors_"))
    return Load(
        engine="wrk",
        connections=connections,
        seconds=round(duration, 2),
        requests=raw["requests"],
        errors=errors,
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
    )


async def _python_load(
    base: str,
    paths: Sequence[str],
    connections: int,
    seconds: float | None,
    count: int | None,
    on_done: Callable[[int, float, int], None] | None,
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    start = time.perf_counter()
    deadline = None if seconds is None else start + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, issued
        while True:
            if count is not None and issued >= count:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            index = issued
            issued += 1
            sent = time.perf_counter()
            try:
                reply = await client.get(paths[index % len(paths)])
                status = reply.status_code
            except httpx.HTTPError:
                status = 0
            elapsed = (time.perf_counter() - sent) * 1000
            latencies.append(elapsed)
            if status != 200:
                errors += 1
            if on_done is not None:
                on_done(index, elapsed, status)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    return latencies, errors, time.perf_counter() - start


def run_python(
    base: str,
    paths: Sequence[str],
    connections: int,
    seconds: float | None = None,
    count: int | None = None,
    on_done: Callable[[int, float, int], None] | None = None,
) -> Load:
    """The Python engine: bounded by ``seconds``, by ``count`` requests, or both."""
    if seconds is None and count is None:
        raise ValueError("give seconds or count")
    latencies, errors, elapsed = asyncio.run(
        _python_load(base, paths, connections, seconds, count, on_done)
    )
    return Load(
        engine="python-httpx",
        connections=connections,
        seconds=round(elapsed, 2),
        requests=len(latencies),
        errors=errors,
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=harness.percentile(latencies, 50),
        p95_ms=harness.percentile(latencies, 95),
        p99_ms=harness.percentile(latencies, 99),
        mean_ms=sum(latencies) / len(latencies) if latencies else float("nan"),
    )


def run(base: str, paths: Sequence[str], connections: int, seconds: float) -> Load:
    """Time-bounded load with wrk when installed, else the Python engine."""
    if wrk_available():
        return run_wrk(base, paths, connections, seconds)
    return run_python(base, paths, connections, seconds=seconds)
