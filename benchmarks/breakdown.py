"""Face-crop cost, stage by stage: a 2048 x 2048 JPEG portrait to 256 x 256, gravity=face.

In process (focal.pipeline.transform with focal's RetinaFace detector), from Result.timings
(decode, detect, process, encode; milliseconds, medians of the runs):

  cold     every run detects (the detector itself, no cache)
  cached   the detector wrapped in the server's detection cache
           (focal.server.detection.caching.CachingDetector), filled by one run first

and, through the server (``focal serve``, detector in its own worker process), the end-to-end
latency of the same URL with no caches, and with the detection cached but no variant cache.

    .venv/bin/python benchmarks/breakdown.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

import harness
import prepare

COMMAND = ".venv/bin/python benchmarks/breakdown.py"
SOURCE = "portrait_2048.jpg"
OPTIONS = "width=256,height=256,fit=cover,gravity=face,format=jpeg,quality=80"


def stages(detector: Any, data: bytes, repeat: int) -> dict[str, Any]:
    from focal.options import parse_options
    from focal.pipeline import transform

    options = parse_options(OPTIONS)
    transform(data, options, detector=detector)  # warm (and fill a cache)
    runs: list[dict[str, float]] = []
    gravity = ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = transform(data, options, detector=detector)
        total = (time.perf_counter() - start) * 1000
        runs.append({**result.timings, "total": total})
        gravity = result.gravity_used
    names = sorted({k for run in runs for k in run})
    return {
        "gravity_used": gravity,
        "median_ms": {n: round(harness.median([r.get(n, 0.0) for r in runs]), 2) for n in names},
        "runs": len(runs),
    }


def server_latency(cache_detections: bool, repeat: int) -> dict[str, Any]:
    """Median end-to-end latency of one URL, one request at a time, no variant cache."""
    server = harness.focal_server(
        harness.INPUTS, cache=False, detections=cache_detections, tag="breakdown"
    )
    url = f"/cdn-cgi/image/{OPTIONS}/{SOURCE}"
    times: list[float] = []
    headers: dict[str, str] = {}
    with harness.running(server), httpx.Client(base_url=server.base, timeout=60) as client:
        first = client.get(url)
        first.raise_for_status()
        for _ in range(repeat):
            start = time.perf_counter()
            reply = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
            headers = {
                k: v
                for k, v in reply.headers.items()
                if k.lower().startswith(("focal", "server-timing"))
            }
    return {
        "median_ms": round(harness.median(times), 2),
        "p95_ms": round(harness.percentile(times, 95), 2),
        "runs": len(times),
        "headers": headers,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Face-crop cost per stage.")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    from focal.face.sessions import load_detector
    from focal.server.detection.caching import CachingDetector

    data = (harness.INPUTS / SOURCE).read_bytes()
    detector = load_detector()
    started = time.monotonic()
    cold = stages(detector, data, args.repeat)
    cached = stages(CachingDetector(detector), data, args.repeat)
    print(f"  in-process cold   {cold['median_ms']}", flush=True)
    print(f"  in-process cached {cached['median_ms']}", flush=True)
    server_cold = server_latency(False, args.repeat)
    server_cached = server_latency(True, args.repeat)
    print(
        f"  server cold {server_cold['median_ms']} ms, "
        f"detection cached {server_cached['median_ms']} ms"
    )
    if args.no_write:
        return 0
    data_out = {
        "source": f"benchmarks/work/inputs/{SOURCE} (2048x2048 JPEG, "
        "from src/focal/demo/grace_hopper.jpg)",
        "options": OPTIONS,
        "detector": {"model_id": detector.model_id, "runtime": detector.session.runtime},
        "in_process": {"cold": cold, "detection_cached": cached},
        "server": {"cold": server_cold, "detection_cached": server_cached},
        "seconds": round(time.monotonic() - started, 1),
    }
    harness.write_result("face_crop_breakdown", data_out, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
