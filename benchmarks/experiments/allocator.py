"""What the memory allocator and libvips' operation cache do to a server-like process: how much
of the memory a burst of heavy transformations takes comes back when they are done, and what
each setting costs a plain resize.

Each variant runs in a fresh process (allocator settings only take effect at start): four heavy
jobs at once on two threads (animations at the frame budget, a 49-megapixel still), then 10 s
idle; RSS is read before, at the peak and after. Then 40 fit-512 resizes of a 2400 px JPEG: CPU ms
(user + system) and minor page faults per request.

    .venv/bin/python benchmarks/experiments/allocator.py  # writes benchmarks/results/allocator.json

Needs Debian's libjemalloc2 for the jemalloc variant (installed if missing, as root).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
MIB = 1024 * 1024
# name -> (environment, focal.server.memory setup arguments)
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "glibc defaults": ({}, {"arenas": 0, "mmap_threshold": 0, "trim": False}),
    "2 arenas, 256 KiB mmap threshold (before)": (
        {},
        {"arenas": 2, "mmap_threshold": 256 * 1024, "trim": False},
    ),
    "2 arenas + trim when idle (chosen)": ({}, {"arenas": 2, "mmap_threshold": 0, "trim": True}),
    "glibc defaults + trim when idle": ({}, {"arenas": 0, "mmap_threshold": 0, "trim": True}),
    "jemalloc (LD_PRELOAD)": (
        {"LD_PRELOAD": str(JEMALLOC)},
        {"arenas": 0, "mmap_threshold": 0, "trim": False},
    ),
    "2 arenas + trim, libvips cache on": (
        {},
        {"arenas": 2, "mmap_threshold": 0, "trim": True, "vips_cache": True},
    ),
}

CHILD = r"""
import concurrent.futures, json, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
config = json.loads(sys.argv[2])
from focal.server import memory
memory.tune(arenas=config["arenas"], mmap_threshold=config["mmap_threshold"])
import pyvips
from focal.options import parse_options
from focal.pipeline import transform
from benchmarks import harness, hostile
if not config.get("vips_cache"):
    pyvips.cache_set_max(0); pyvips.cache_set_max_mem(0); pyvips.cache_set_max_files(0)
pid = __import__("os").getpid()
anim = hostile.gif_screen_bomb(24, 2000)  # 96 megapixels in all: under the budget
flat = (pyvips.Image.black(7000, 7000) + [40, 120, 200]).cast("uchar").copy(interpretation="srgb")
still = bytes(flat.pngsave_buffer(compression=1))
jobs = [(anim, "width=300"), (still, "width=3000"), (anim, "width=200,format=webp")]
jobs.append((still, "width=2000,blur=2"))
before = harness.rss_bytes(pid)
peak = [before]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], harness.rss_bytes(pid)); time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
def run(job):
    transform(job[0], parse_options(job[1]))
    if config["trim"]:
        memory.trim()
with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for _ in range(2):
        list(pool.map(run, jobs))
stop.set()
time.sleep(10)
after = harness.rss_bytes(pid)
photo = bytes(pyvips.Image.new_from_file(sys.argv[3]).thumbnail_image(2400).jpegsave_buffer(Q=90))
options = parse_options("width=512,height=512,fit=scale-down")
for _ in range(5):
    transform(photo, options)
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0, faults0 = usage.ru_utime + usage.ru_stime, usage.ru_minflt
count = 40
for _ in range(count):
    transform(photo, options)
    if config["trim"]:
        memory.trim()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "rss_before_mib": round(before / 2**20, 1),
    "rss_peak_mib": round(peak[0] / 2**20, 1),
    "rss_10s_after_mib": round(after / 2**20, 1),
    "resize_cpu_ms": round((usage.ru_utime + usage.ru_stime - cpu0) * 1000 / count, 2),
    "resize_minor_faults": round((usage.ru_minflt - faults0) / count),
}))
"""


def ensure_jemalloc() -> bool:
    if JEMALLOC.exists():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "libjemalloc2"], check=False)
    return JEMALLOC.exists()


def run_variant(env: dict[str, str], config: dict[str, Any], photo: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(harness.ROOT), json.dumps(config), str(photo)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    have_jemalloc = ensure_jemalloc()
    photo = harness.ROOT / "src" / "focal" / "demo" / "astronaut.jpg"
    rows: dict[str, Any] = {}
    for name, (env, config) in VARIANTS.items():
        if "LD_PRELOAD" in env and not have_jemalloc:
            rows[name] = {"skipped": "libjemalloc2 is not installed"}
            continue
        started = time.perf_counter()
        rows[name] = run_variant(env, config, photo)
        rows[name]["wall_s"] = round(time.perf_counter() - started, 1)
        print(f"{name:45} {json.dumps(rows[name])}", flush=True)
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)")
    harness.write_result(
        "allocator", {"variants": rows}, ".venv/bin/python benchmarks/experiments/allocator.py"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
