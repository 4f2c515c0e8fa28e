"""Worker memory and CPU time of a batch of detections, run whole or in pieces.

The server hands its detector worker batches of up to ``detector_max_batch`` images. This runs
the default CPU detector (``open_detector(DetectorConfig())``) on ``--batch`` copies of a demo
photo scaled to ``--side`` x ``--side``, ``--repeat`` times, in a fresh process per mode:

    pieces   focal's way: at most one capped image's pixels per run of the network
             (focal.face.detector.run_in_pieces)
    whole    the whole batch in one run

and reports the process's RSS after the runs and the CPU and wall time per image (the first
call, which sizes the runtime's memory, left out). Modes alternate for ``--rounds`` rounds.

    .venv/bin/python benchmarks/experiments/detector_batch.py [--batch 8] [--side 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness

COMMAND = ".venv/bin/python benchmarks/experiments/detector_batch.py"
MODES = ("pieces", "whole")


def child(mode: str, batch: int, side: int, repeat: int) -> dict[str, float]:
    import numpy as np
    import pyvips

    from focal.face import detector
    from focal.face.sessions import DetectorConfig, open_detector

    if mode == "whole":
        detector.run_in_pieces.__defaults__ = (sys.maxsize,)
    found = open_detector(DetectorConfig())
    photo = pyvips.Image.new_from_file(str(harness.DEMO / "astronaut.jpg"))
    photo = photo.thumbnail_image(side, height=side, size="force")[:3]
    shape = (photo.height, photo.width, 3)
    image = np.ndarray(buffer=photo.write_to_memory(), dtype=np.uint8, shape=shape).copy()
    found.detect_with_candidates([image] * batch)  # the first call sizes the runtime's memory
    started, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        faces = found.detect_with_candidates([image] * batch)
    cpu_ms = (time.process_time() - started) * 1000 / (repeat * batch)
    wall_ms = (time.perf_counter() - wall) * 1000 / (repeat * batch)
    rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
    return {
        "rss_mib": round(rss / 2**20, 1),
        "cpu_ms_per_image": round(cpu_ms, 1),
        "wall_ms_per_image": round(wall_ms, 1),
        "faces": len(faces[0][0]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.side, args.repeat)))
        return 0
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            command = [sys.executable, __file__, "--child", mode, "--batch", str(args.batch)]
            command += ["--side", str(args.side), "--repeat", str(args.repeat)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows[mode].append(json.loads(out.strip().splitlines()[-1]))
            print(mode, rows[mode][-1], flush=True)
    summary = {
        mode: {
            "rss_mib": harness.median([r["rss_mib"] for r in runs]),
            "cpu_ms_per_image": harness.median([r["cpu_ms_per_image"] for r in runs]),
            "wall_ms_per_image": harness.median([r["wall_ms_per_image"] for r in runs]),
        }
        for mode, runs in rows.items()
    }
    print(json.dumps(summary))
    body = {"batch": args.batch, "side": args.side, "runs": rows, "median": summary}
    harness.write_result("detector_batch", body, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
