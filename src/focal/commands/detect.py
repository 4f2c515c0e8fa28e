"""`focal detect IMAGE`: the faces RetinaFace finds, with landmarks, scores and timings.

Detection runs on the image shrunk to fit 1024 x 1024 (EXIF orientation applied); coordinates
are given in the full-size, oriented image. --draw writes a PNG with the face boxes, landmarks,
the outer box of all faces, its centre (the focal point) and the face crop at --zoom.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyvips

from focal import geometry
from focal.commands.common import option_flag, unit_float
from focal.detection import Face
from focal.errors import FocalError, ModelMissingError
from focal.face import detector as cpu
from focal.face import sessions
from focal.face.retinaface import Settings

MISSING_MODEL = 3
FACE_INK = [0, 255, 0]
LANDMARK_INK = [255, 0, 255]
OUTER_INK = [255, 200, 0]
CROP_INK = [0, 160, 255]
FOCAL_INK = [255, 0, 0]


def register(sub: Any) -> None:
    p = sub.add_parser("detect", help="find faces in an image", description=__doc__)
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print a JSON description")
    p.add_argument("--draw", type=Path, metavar="OUT.png", help="write an annotated PNG")
    p.add_argument(
        "--zoom", type=option_flag("zoom"), default=0.5, help="zoom of the drawn crop (0..1)"
    )
    p.add_argument("--model-dir", type=Path, default=None, help="model cache dir")
    p.add_argument("--runtime", choices=sessions.CPU_RUNTIMES, default="auto")
    p.add_argument("--precision", choices=sessions.PRECISIONS, default=sessions.DEFAULT_PRECISION)
    p.add_argument(
        "--score-threshold",
        type=unit_float,
        default=Settings.score_threshold,
        help="lowest score listed as a face (0 to below 1)",
    )
    p.set_defaults(func=run)


def _boxes(faces: Sequence[Face]) -> list[geometry.Box]:
    return [geometry.Box(*face.box) for face in faces]


def _region(result: cpu.FileDetection, zoom: float) -> geometry.FaceRegion | None:
    size = geometry.Size(result.width, result.height)
    return geometry.face_region(_boxes(result.faces), zoom, size)


def describe(
    path: Path, result: cpu.FileDetection, region: geometry.FaceRegion | None, model: str
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "image": str(path),
        "width": result.width,
        "height": result.height,
        "inference": {"width": result.inference_width, "height": result.inference_height},
        "model": model,
        "faces": cpu.describe(result.faces),
        "timings_ms": {k: round(v, 2) for k, v in result.timings.items()},
    }
    if region is not None:
        box = region.outer
        summary["outer_box"] = [round(v, 2) for v in (box.left, box.top, box.right, box.bottom)]
        summary["focal_point"] = [round(v, 2) for v in region.focal]
    return summary


def _print_text(summary: dict[str, Any]) -> None:
    inference = summary["inference"]
    print(
        f"{summary['image']}: {summary['width']}x{summary['height']}, detected at "
        f"{inference['width']}x{inference['height']}, {len(summary['faces'])} face(s)"
    )
    for face in summary["faces"]:
        x1, y1, x2, y2 = face["box"]
        marks = " ".join(f"{n}=({x:.0f},{y:.0f})" for n, (x, y) in face["landmarks"].items())
        print(f"  score {face['score']:.3f} box ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f}) {marks}")
    if "outer_box" in summary:
        print(f"  outer box {summary['outer_box']} focal point {summary['focal_point']}")
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in summary["timings_ms"].items())
    print(f"  {timings} ({summary['model']})")


def _rect(image: pyvips.Image, ink: list[int], box: geometry.Box, width: int) -> pyvips.Image:
    left, top = round(box.left), round(box.top)
    w, h = max(1, round(box.width)), max(1, round(box.height))
    for i in range(width):
        image = image.draw_rect(ink, left - i, top - i, w + 2 * i, h + 2 * i)
    return image


def draw(path: Path, out: Path, faces: Sequence[Face], region: geometry.FaceRegion | None) -> None:
    """The oriented image with boxes, landmarks, outer box, focal point and crop, as PNG."""
    image = pyvips.Image.new_from_file(str(path)).autorot()
    image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    image = image.cast("uchar").copy_memory()
    line = max(2, round(max(image.width, image.height) / 400))
    for face in faces:
        image = _rect(image, FACE_INK, geometry.Box(*face.box), line)
        for x, y in face.landmarks:
            image = image.draw_circle(LANDMARK_INK, round(x), round(y), line * 2, fill=True)
    if region is not None:
        image = _rect(image, OUTER_INK, region.outer, line)
        image = _rect(image, CROP_INK, region.crop, line)
        fx, fy = region.focal
        image = image.draw_circle(FOCAL_INK, round(fx), round(fy), line * 4, fill=True)
    image.write_to_file(str(out))


def run(args: argparse.Namespace) -> int:
    try:
        detector = sessions.load_detector(
            args.model_dir, args.runtime, args.precision, score_threshold=args.score_threshold
        )
        result = cpu.detect_file(detector, args.image)
        region = _region(result, args.zoom)
        summary = describe(args.image, result, region, detector.model_id)
        if args.draw is not None:
            draw(args.image, args.draw, result.faces, region)
    except ModelMissingError as exc:
        print(f"focal detect: {exc.public}", file=sys.stderr)
        return MISSING_MODEL
    except (FocalError, pyvips.Error) as exc:
        message = exc.public if isinstance(exc, FocalError) else str(exc).strip()
        print(f"focal detect: {args.image}: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_text(summary)
    return 0
