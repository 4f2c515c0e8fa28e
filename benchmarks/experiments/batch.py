"""`focal batch` on a local Ray against `focal transform` on the same folder: images per second
for the same options, each command timed whole (Ray's start-up included) as a user runs it.

The folder is made in a temporary directory and removed afterwards: 500 JPEGs, resized copies
(1024 px on the long side, a different quality each, so every file has pixels of its own) of the
evaluation photos in ../shared/facedata, read in place.

    .venv/bin/python benchmarks/experiments/batch.py  # writes benchmarks/results/batch.json
    .venv/bin/python benchmarks/experiments/batch.py --count 100 --options width=256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyvips

ROOT = Path(__file__).resolve().parents[2]
FACEDATA = Path(os.environ.get("FOCAL_FACEDATA", ROOT.parent / "shared" / "facedata"))
RESULTS = ROOT / "benchmarks" / "results" / "batch.json"
FOCAL = [sys.executable, "-m", "focal"]


def make_folder(folder: Path, count: int) -> None:
    photos = sorted(FACEDATA.rglob("*.jpg"))
    for i in range(count):
        image = pyvips.Image.thumbnail(str(photos[i % len(photos)]), 1024)
        (folder / f"img{i:04d}.jpg").write_bytes(bytes(image.jpegsave_buffer(Q=70 + i % 25)))


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--options", default="width=256,height=256,fit=cover,gravity=face,zoom=0.5")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-args", default="", help="more flags for focal batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="focal-batch-bench-"))
    try:
        src = work / "src"
        src.mkdir()
        make_folder(src, args.count)
        runs: dict[str, Any] = {}
        commands = {
            "focal transform": [*FOCAL, "transform", str(src), "-o", str(work / "cli")],
            "focal batch (local Ray)": [
                *FOCAL,
                "batch",
                str(src),
                str(work / "ray"),
                "--num-cpus",
                str(args.cpus),
                "--stats",
                str(args.out.with_suffix(".ray_stats.txt")),
                *args.batch_args.split(),
            ],
        }
        for name, command in commands.items():
            seconds, summary = timed([*command, "--options", args.options])
            runs[name] = {
                "command": " ".join(["focal", *command[3:], "--options", args.options]),
                "seconds": round(seconds, 2),
                "images_per_s": round(args.count / seconds, 2),
                "summary": summary,
            }
            print(f"{name:28s} {seconds:7.1f} s  {args.count / seconds:6.2f} images/s", flush=True)
        cli, ray = runs["focal transform"], runs["focal batch (local Ray)"]
        out = {
            "images": args.count,
            "options": args.options,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
            "runs": runs,
            "batch_vs_transform": round(ray["images_per_s"] / cli["images_per_s"], 3),
        }
        args.out.parent.mkdir(exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"batch / transform = {out['batch_vs_transform']}; wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
