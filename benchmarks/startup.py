"""Start-up overhead of the CLI: ``focal --help`` and a one-file ``focal transform`` against
Debian's ``vipsthumbnail`` (libvips-tools) doing the same one-file job (fit 256 px, JPEG).

Each command runs ``--repeat`` times, interleaved (focal help, focal transform, vipsthumbnail,
then again), and the median wall time of each is kept. The overhead is focal's median minus
vipsthumbnail's: what a user waits for on top of libvips' own tool.

    .venv/bin/python benchmarks/startup.py [--repeat 9]     # writes benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import harness

SOURCE = harness.DEMO / "coffee.jpg"
COMMAND = ".venv/bin/python benchmarks/startup.py"


def focal_bin() -> str:
    """The ``focal`` entry point beside this interpreter (the project's virtual environment)."""
    beside = Path(sys.executable).with_name("focal")
    return str(beside) if beside.exists() else "focal"


def commands(out: Path) -> dict[str, list[str]]:
    focal = focal_bin()
    return {
        "focal --help": [focal, "--help"],
        "focal transform (1 file)": [
            focal,
            "transform",
            str(SOURCE),
            "-o",
            str(out / "focal.jpg"),
            "--options",
            "width=256,format=jpeg",
        ],
        "vipsthumbnail (1 file)": [
            "vipsthumbnail",
            str(SOURCE),
            "-s",
            "256",
            "-o",
            str(out / "vips.jpg"),
        ],
    }


def wall_s(command: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(list(command), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    if shutil.which("vipsthumbnail") is None:
        print("vipsthumbnail not installed (apt-get install libvips-tools)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        jobs = commands(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for command in jobs.values():  # once each before measuring: page cache, .pyc files
            wall_s(command)
        for _ in range(args.repeat):
            for name, command in jobs.items():
                times[name].append(wall_s(command))
    medians = {name: harness.median(values) for name, values in times.items()}
    floor = medians["vipsthumbnail (1 file)"]
    rows = [
        {
            "command": name,
            "median_s": round(value, 3),
            "min_s": round(min(times[name]), 3),
            "max_s": round(max(times[name]), 3),
            "overhead_over_vipsthumbnail_s": round(value - floor, 3),
        }
        for name, value in medians.items()
    ]
    for row in rows:
        print(
            f"{row['command']:26} median {row['median_s']:.3f} s "
            f"(min {row['min_s']:.3f}, max {row['max_s']:.3f}), "
            f"overhead {row['overhead_over_vipsthumbnail_s']:+.3f} s"
        )
    harness.write_result("startup", {"repeat": args.repeat, "rows": rows}, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
