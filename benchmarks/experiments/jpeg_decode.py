"""In-process JPEG costs of the fit-512 job, to decide two levers by numbers:

- decode: libvips' shrink-on-load (``new_from_buffer(shrink=N)``, libvips' bundled mozjpeg) against
  a DCT-scaled libjpeg-turbo decode (PyPI ``simplejpeg``, which bundles libjpeg-turbo, at the
  same scale) handed to libvips with ``pyvips.Image.new_from_memory``;
- encode: progressive (focal's default ``format=jpeg``) against baseline (``baseline-jpeg``);
- thumbor's PIL engine steps for the same job, in process (Pillow: ``draft`` at the target size,
  which decodes at the same 1/4 DCT scale, LANCZOS resize, JPEG q80 optimised progressive), and
  Pillow's draft decode alone. One request at a time, a resize runs on one core from decode to
  encode and a JPEG's entropy decoding is sequential, so thumbor's pipeline over the cheapest of
  the three decodes is the most focal's req/s can be over thumbor's at concurrency 1, were every
  other step free ("ceiling at concurrency 1").

CPU milliseconds per image (``time.process_time``, this process's threads), on the 2400 px
sources of benchmarks/work/inputs/large/ (2400 px on the long side, 1596-2400 px on the
short). The cases run in rounds, the order rotating each round; the ratio of two cases is taken
within a round and reported as min / median / max.

    .venv/bin/python benchmarks/experiments/jpeg_decode.py [--rounds 12]

simplejpeg and Pillow are not dependencies of focal: ``.venv/bin/python -m pip install
simplejpeg pillow==12.3.0`` first (the Pillow thumbor 7.8 runs on in benchmarks/threeway.py).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
import prepare
import threeway

COMMAND = ".venv/bin/python benchmarks/experiments/jpeg_decode.py"
FIT = "width=512,height=512,fit=scale-down,format={fmt},quality=80,metadata=none"
SHRINK = 4  # what focal picks for 2400 px -> 512 (decode.jpeg_shrink)


def cases() -> dict[str, Callable[[bytes], object]]:
    import pyvips
    import simplejpeg
    from PIL import Image

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

    def pillow_decode(data: bytes) -> object:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (image.width // SHRINK, image.height // SHRINK))
        image.load()
        return image

    def pillow_pipeline(data: bytes) -> object:
        # thumbor's PILEngine: resize() drafts at the target size, then LANCZOS; save() with
        # quality, optimize and (PROGRESSIVE_JPEG, its default) progressive
        image = Image.open(io.BytesIO(data))
        scale = min(512 / image.width, 512 / image.height, 1.0)
        size = (round(image.width * scale), round(image.height * scale))
        image.draft(None, size)
        resized = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        resized.save(out, "JPEG", quality=80, optimize=True, progressive=True)
        return out.getvalue()

    return {
        "decode_libvips_shrink": vips_decode,
        "decode_libjpeg_turbo_scaled": turbo_decode,
        "decode_pillow_draft": pillow_decode,
        "transform_progressive": lambda data: transform(data, progressive),
        "transform_baseline": lambda data: transform(data, baseline),
        "thumbor_pillow_pipeline": pillow_pipeline,
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
        "decode Pillow draft / libvips (CPU)": _cost_ratio(
            rows, "decode_pillow_draft", "decode_libvips_shrink"
        ),
        "thumbor's Pillow pipeline / focal transform (CPU)": _cost_ratio(
            rows, "thumbor_pillow_pipeline", "transform_progressive"
        ),
        "ceiling at concurrency 1: thumbor's Pillow pipeline / cheapest decode": _ceiling(rows),
    }
    return {"sources": prepare.inputs("large"), "cpu_ms": per_case, "ratios": ratios, "rows": rows}


def _cost_ratio(rows: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, float] | None:
    by = {(r["round"], r["server"]): r["cpu_ms"] for r in rows}
    rounds = sorted({r["round"] for r in rows})
    return threeway.spread(by[(i, a)] / by[(i, b)] for i in rounds if (i, a) in by and (i, b) in by)


def _ceiling(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Per round: thumbor's pipeline over the cheapest of the decodes."""
    by = {(r["round"], r["server"]): r["cpu_ms"] for r in rows}
    decodes = ("decode_libvips_shrink", "decode_libjpeg_turbo_scaled", "decode_pillow_draft")
    rounds = sorted({r["round"] for r in rows})
    return threeway.spread(
        by[(i, "thumbor_pillow_pipeline")] / min(by[(i, d)] for d in decodes) for i in rounds
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process JPEG decode and encode costs.")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    try:
        import simplejpeg  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError:
        raise SystemExit(
            "needs simplejpeg and Pillow: .venv/bin/python -m pip install simplejpeg pillow==12.3.0"
        ) from None
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
