"""In-process JPEG costs of the fit-512 job, to decide two levers by numbers:

- decode: libvips' shrink-on-load (``new_from_buffer(shrink=N)``, libvips' bundled mozjpeg) against
  a DCT-scaled libjpeg-turbo decode (PyPI ``simplejpeg``, which bundles libjpeg-turbo, at the
  same scale) handed to libvips with ``pyvips.Image.new_from_memory``;
- encode: progressive (focal's default ``format=jpeg``) against baseline (``baseline-jpeg``).

CPU milliseconds per image (``time.process_time``, this process's threads), on the 2400 px
sources of benchmarks/work/inputs/large/ (2400 px on the long side, 1596-2400 px on the
short). The cases run in rounds, the order rotating each round; the ratio of two cases is taken
within a round and reported as min / median / max.

    .venv/bin/python benchmarks/jpeg_decode.py [--rounds 12]

simplejpeg is not a dependency of focal: ``.venv/bin/python -m pip install simplejpeg`` first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import harness
import prepare
import threeway

COMMAND = ".venv/bin/python benchmarks/jpeg_decode.py"
FIT = "width=512,height=512,fit=scale-down,format={fmt},quality=80,metadata=none"
SHRINK = 4  # what focal picks for 2400 px -> 512 (decode.jpeg_shrink)


def cases() -> dict[str, Callable[[bytes], object]]:
    import pyvips
    import simplejpeg

    from focal.options import parse_options
    from focal.pipeline import transform

    progressive = parse_options(FIT.format(fmt="jpeg"))
    baseline = parse_options(FIT.format(fmt="baseline-jpeg"))

    def vips_decode(data: bytes) -> object:
        return pyvips.Image.new_from_buffer(data, "", shrink=SHRINK).copy_memory()

    def turbo_decode(data: bytes) -> object:
        # min_width/min_height: the smallest DCT scale keeping at least the libvips size
        header = pyvips.Image.new_from_buffer(data, "")
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_width=header.width // SHRINK,
            min_height=header.height // SHRINK,
        )
        height, width, bands = pixels.shape
        image = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
        return image.copy_memory()

    return {
        "decode_libvips_shrink": vips_decode,
        "decode_libjpeg_turbo_scaled": turbo_decode,
        "transform_progressive": lambda data: transform(data, progressive),
        "transform_baseline": lambda data: transform(data, baseline),
    }


def measure(rounds: int) -> dict[str, Any]:
    import pyvips

    pyvips.cache_set_max(0)
    sources = [(harness.INPUTS / p).read_bytes() for p in prepare.inputs("large")]
    found = cases()
    for case in found.values():  # warm up: code paths, libvips' thread pool
        for data in sources:
            case(data)
    rows: list[dict[str, Any]] = []
    for round_index, order in enumerate(threeway.schedule(list(found), rounds)):
        for name in order:
            start = time.process_time()
            for data in sources:
                found[name](data)
            cpu_ms = (time.process_time() - start) * 1000 / len(sources)
            rows.append(
                {
                    "job": "jpeg",
                    "connections": 1,
                    "round": round_index,
                    "server": name,
                    "rps": 1000 / cpu_ms,  # images per CPU second: a ratio of costs inverted
                    "cpu_ms": round(cpu_ms, 2),
                }
            )
    per_case = {
        name: threeway.spread(r["cpu_ms"] for r in rows if r["server"] == name) for name in found
    }
    ratios = {
        "decode libjpeg-turbo / libvips (CPU)": _cost_ratio(
            rows, "decode_libjpeg_turbo_scaled", "decode_libvips_shrink"
        ),
        "transform baseline / progressive (CPU)": _cost_ratio(
            rows, "transform_baseline", "transform_progressive"
        ),
    }
    return {"sources": prepare.inputs("large"), "cpu_ms": per_case, "ratios": ratios, "rows": rows}


def _cost_ratio(rows: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, float] | None:
    by = {(r["round"], r["server"]): r["cpu_ms"] for r in rows}
    rounds = sorted({r["round"] for r in rows})
    return threeway.spread(by[(i, a)] / by[(i, b)] for i in rounds if (i, a) in by and (i, b) in by)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process JPEG decode and encode costs.")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        raise SystemExit("needs simplejpeg: .venv/bin/python -m pip install simplejpeg") from None
    data = measure(args.rounds)
    for name, spread in data["cpu_ms"].items():
        print(f"  {name:30s} CPU ms/image min/median/max {spread}")
    for name, spread in data["ratios"].items():
        print(f"  {name:40s} {spread}")
    if not args.no_write:
        harness.write_result("jpeg_decode", data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
