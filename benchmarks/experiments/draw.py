"""What draw adds to a transformation: CPU ms per request of the same resize (the demo coffee photo
to 800 px wide, JPEG) with no overlay, the demo logo in a corner, the logo tiled over the whole
image at opacity 0.3, and the logo in a corner on a 5-frame animated GIF (every frame drawn).
One thread, in process, after two warm-up runs; the median of the runs, and the medians of the
pipeline's own "process" (decode, resize, draw) and "encode" stages (wall ms).

    .venv/bin/python benchmarks/experiments/draw.py [runs]     # writes benchmarks/results/draw.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests/

from tests import images

from focal.options import draw_b64, parse_options
from focal.pipeline import transform

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "focal" / "demo"
CORNER = [{"url": "logo.png", "width": 0.25, "fit": "contain", "bottom": 10, "right": 10}]
TILED = [{"url": "logo.png", "width": 120, "repeat": True, "opacity": 0.3}]


def measure(data: bytes, text: str, overlays: dict[str, bytes], runs: int) -> dict[str, float]:
    options = parse_options(text)
    for _ in range(2):
        transform(data, options, overlays=overlays)
    times: dict[str, list[float]] = {"cpu": [], "process": [], "encode": []}
    for _ in range(runs):
        start = time.process_time()
        result = transform(data, options, overlays=overlays)
        times["cpu"].append((time.process_time() - start) * 1000)
        times["process"].append(result.timings["process"])
        times["encode"].append(result.timings["encode"])
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=30, help="runs per case (30)")
    runs = parser.parse_args().runs
    pyvips.cache_set_max(0)  # as focal serve runs
    photo = (DEMO / "coffee.jpg").read_bytes()
    gif = images.animated_gif(400, 300)
    logo = {"logo.png": (DEMO / "logo.png").read_bytes()}
    cases = {
        "photo, no overlay": (photo, "width=800,format=jpeg"),
        "photo, logo in a corner": (photo, f"width=800,format=jpeg,draw={draw_b64(CORNER)}"),
        "photo, logo tiled at 0.3": (photo, f"width=800,format=jpeg,draw={draw_b64(TILED)}"),
        "5-frame gif, no overlay": (gif, "width=400,format=gif"),
        "5-frame gif, logo in a corner": (gif, f"width=400,format=gif,draw={draw_b64(CORNER)}"),
    }
    results = {name: measure(data, text, logo, runs) for name, (data, text) in cases.items()}
    for name, ms in results.items():
        print(
            f"{name:32} {ms['cpu']:8.2f} ms CPU   process {ms['process']:7.2f} ms   "
            f"encode {ms['encode']:7.2f} ms"
        )
    out = ROOT / "benchmarks" / "results" / "draw.json"
    out.write_text(json.dumps({"runs": runs, "median_ms": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
