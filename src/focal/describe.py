"""The JSON description of a transformation (format=json, and every Result's description): the
output and the source, the faces and candidates, the crop and the gravity used."""

from __future__ import annotations

from typing import Any

from focal import geometry, steps
from focal.decode import MIME, Header
from focal.detection import Face
from focal.detection_input import Faces
from focal.encode import content_type
from focal.geometry import Box, Plan, Size
from focal.options import Options

TRUNCATED = "the source is truncated or damaged: the part that could not be decoded is grey"


def describe(
    header: Header,
    options: Options,
    plan: Plan,
    faces: Faces,
    fmt: str,
    frames: int,
    working: Size,
) -> dict[str, Any]:
    width, height = header.oriented_size
    region = plan.face
    return {
        "width": plan.canvas.width,
        "height": plan.canvas.height,
        "format": content_type(fmt),
        "frames": frames,
        "original": {
            "file_size": header.bytes,
            "width": width,
            "height": height,
            "format": MIME[header.format],
            "frames": header.frames,
        },
        "faces": [_face(face, region, working) for face in faces.found],
        "faces_left_out": None if region is None else len(region.left_out),
        "candidates": _candidates(plan, faces),
        "outer_box": None if region is None else _box(region.outer),
        "focal_point": None if region is None else [round(v, 1) for v in region.focal],
        "crop": {
            "left": plan.crop.left,
            "top": plan.crop.top,
            "width": plan.crop.width,
            "height": plan.crop.height,
        },
        "gravity": plan.gravity_used,
        "gravity_requested": options.gravity.mode,
        "fallback": plan.fallback,
        "degraded": faces.degraded,
    }


def _face(face: Face, region: geometry.FaceRegion | None, working: Size) -> dict[str, Any]:
    """A detected face in the json description: its box, its score, and whether the crop keeps
    it (``left_out`` says why not: docs/cropping.md)."""
    entry: dict[str, Any] = {"box": [round(v, 1) for v in face.box], "score": round(face.score, 4)}
    clipped = geometry.clip(Box(*face.box), working)
    if region is not None and clipped in region.left_out:
        entry["left_out"] = geometry.LEFT_OUT
    return entry


def _candidates(plan: Plan, faces: Faces) -> dict[str, Any] | None:
    """Weak candidates (docs/cropping.md): how many the detector gave, how many the crop holds
    whole, and whether they moved the crop from the published placement (None: no face crop)."""
    if plan.face is None:
        return None
    steering = plan.steering
    return {
        "found": len(faces.candidates),
        "held": 0 if steering is None else steering.held,
        "moved_crop": steering is not None and steering.moved,
    }


def _box(box: Box) -> list[float]:
    return [round(box.left, 1), round(box.top, 1), round(box.right, 1), round(box.bottom, 1)]


def describe_extras(
    description: dict[str, Any], options: Options, hidden: list[list[Box]], fail_on: str
) -> None:
    """The border in the output size, the faces redacted, and whether the source was damaged."""
    border_width, border_height = border_size(options)
    description["width"] += border_width
    description["height"] += border_height
    if options.redact:
        description["redacted"] = sum(len(boxes) for boxes in hidden)
    description["source_warning"] = TRUNCATED if fail_on == "none" else None


def border_size(options: Options) -> tuple[int, int]:
    top, right, bottom, left = steps.border_sides(options.border, options.dpr)
    return left + right, top + bottom
