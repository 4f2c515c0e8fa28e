"""The transformation core: bytes + options in, encoded bytes (or a JSON description) out.

The whole pipeline, in order (each step a small function in :mod:`focal.steps`):

    read_header -> check limits -> [detect faces on a <=1024 px copy] -> plan (focal.geometry)
    -> load with shrink-on-load -> orient -> sRGB -> trim -> rotate/flip -> crop+resize -> pad
    -> adjust (brightness, contrast, gamma, saturation) -> blur -> sharpen -> flatten -> encode

Animated sources run every frame through the same steps with the same plan, on the strip of
frames (libvips' page-height layout) where a step cannot mix one frame's pixels into the next
(see :mod:`focal.steps`), frame by frame where it can.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyvips

from focal import geometry, steps
from focal.decode import ANIMATED, MIME, Header, check, jpeg_shrink, load, read_header
from focal.detection import DetectionFailed, Detector, Face
from focal.encode import ANIMATES, KEEPS_ALPHA, choose_format, content_type, encode
from focal.errors import FocalError, ImageError, LimitError, OptionError, expected
from focal.geometry import INFERENCE_CAP, Box, Plan, Size
from focal.options import Format, Options

MATERIALISE_PIXELS = 4_000_000


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 100_000_000  # per frame, read from the header before decoding
    max_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 50_000_000  # all output frames together
    max_frames: int = 300


@dataclass(frozen=True)
class Result:
    data: bytes
    content_type: str
    format: str  # jpeg, baseline-jpeg, png, webp, avif, gif, json
    width: int
    height: int
    gravity_used: str
    degraded: bool  # face detection failed (timeout, worker died): fallback used; never cache
    negotiated: bool  # the format came from the Accept header (send Vary: Accept)
    fallback: str | None = None  # why the asked gravity was not used
    description: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # ms: decode, detect, process, encode


class Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self.ms[stage] = round(self.ms.get(stage, 0.0) + elapsed, 3)


@dataclass(frozen=True)
class Faces:
    found: tuple[Face, ...] = ()
    fallback: str | None = None
    degraded: bool = False


def transform(
    data: bytes,
    options: Options,
    *,
    detector: Detector | None = None,
    limits: Limits = Limits(),
    accept: str | None = None,
) -> Result:
    """Run the whole pipeline. Raises :class:`focal.errors.FocalError` subclasses only."""
    try:
        return _transform(data, options, detector, limits, accept)
    except FocalError:
        raise
    except pyvips.Error as error:
        raise ImageError("The source image is truncated or corrupt", detail=str(error)) from None


def _transform(
    data: bytes, options: Options, detector: Detector | None, limits: Limits, accept: str | None
) -> Result:
    timer = Timer()
    _check_option_combinations(options)
    if len(data) > limits.max_bytes:
        raise LimitError(f"The source is {len(data)} bytes: expected at most {limits.max_bytes}")
    with timer("decode"):
        header = read_header(data)
        check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
    animated = options.anim and header.frames > 1 and header.format in ANIMATED
    fmt, negotiated = choose_format(options, header, accept, animated)
    animated = animated and (fmt in ANIMATES or options.format is Format.JSON)
    working = _working_size(header, options)
    faces = Faces()
    if options.gravity.mode == "face":
        faces = _detect(data, header, options, working, detector, timer)
    plan = geometry.plan(
        working,
        options.target_width,
        options.target_height,
        options.fit,
        options.gravity,
        faces=[Box(*face.box) for face in faces.found],
        zoom=options.zoom,
        cap=INFERENCE_CAP,
    )
    frames = header.frames if animated else 1
    _check_output(plan, frames, limits)
    shrink = 1 if options.trim and options.trim.border else _shrink_for(header, plan)
    with timer("decode"):
        image = load(data, header, animated=animated, shrink=shrink)
        strip, pages = _prepare_all(image, frames, options, header)
    if options.gravity.mode == "auto":
        plan = _auto_plan(pages[0], working, plan, options)
    if faces.fallback:
        plan = replace(plan, fallback=faces.fallback)
    description = _describe(header, options, plan, faces, fmt, frames)
    if options.format is Format.JSON:
        description["timings"] = dict(timer.ms)
        body = json.dumps(description, indent=2).encode()
        return _result(body, "application/json", "json", plan, faces, False, description, timer)
    with timer("process"):
        loaded_scale = pages[0].width / working.width
        if strip is not None:
            joined = _finish_strip(strip, frames, plan, options, loaded_scale, fmt)
        else:
            joined = _join([_finish(page, plan, options, loaded_scale, fmt) for page in pages])
        if joined.width * joined.height <= MATERIALISE_PIXELS:
            joined = (
                joined.copy_memory()
            )  # so "process" holds decode + resize, "encode" only encoding
    with timer("encode"):
        body = encode(joined, fmt, options)
    description["timings"] = dict(timer.ms)
    return _result(body, content_type(fmt), fmt, plan, faces, negotiated, description, timer)


def _result(
    body: bytes,
    ctype: str,
    fmt: str,
    plan: Plan,
    faces: Faces,
    negotiated: bool,
    description: dict[str, Any],
    timer: Timer,
) -> Result:
    return Result(
        data=body,
        content_type=ctype,
        format=fmt,
        width=plan.canvas.width,
        height=plan.canvas.height,
        gravity_used=plan.gravity_used,
        degraded=faces.degraded,
        negotiated=negotiated,
        fallback=plan.fallback,
        description=description,
        timings=dict(timer.ms),
    )


def _check_option_combinations(options: Options) -> None:
    if options.zoom and options.gravity.mode != "face":
        raise expected("zoom", "gravity=face alongside it", f"zoom={options.zoom:g} without it")


def _working_size(header: Header, options: Options) -> Size:
    """The size the geometry works on: oriented, trimmed (by pixels), rotated."""
    width, height = header.oriented_size
    trim = options.trim
    if trim is not None and not trim.border:
        width -= trim.left + trim.right
        height -= trim.top + trim.bottom
        if width < 1 or height < 1:
            raise OptionError(
                f"Expected a trim smaller than the image ({header.oriented_size[0]}x"
                f"{header.oriented_size[1]}) for trim but received '{trim.top};{trim.right};"
                f"{trim.bottom};{trim.left}'"
            )
    if options.rotate in (90, 270):
        width, height = height, width
    return Size(width, height)


def _shrink_for(header: Header, plan: Plan) -> int:
    if header.format != "jpeg":
        return 1
    scale = min(plan.resize.width / plan.crop.width, plan.resize.height / plan.crop.height)
    return jpeg_shrink(scale)


def _split(image: pyvips.Image, frames: int) -> list[pyvips.Image]:
    if frames <= 1:
        return [image]
    height = image.height // frames
    return [image.crop(0, i * height, image.width, height) for i in range(frames)]


def _prepare(page: pyvips.Image, options: Options, header: Header) -> pyvips.Image:
    page = steps.orient(page)
    page = steps.to_srgb(page)
    scale = page.width / header.oriented_size[0]
    page = steps.trim(page, options.trim, scale)
    return steps.rotate_flip(page, options)


def _prepare_all(
    image: pyvips.Image, frames: int, options: Options, header: Header
) -> tuple[pyvips.Image | None, list[pyvips.Image]]:
    """(the prepared strip of an animated source, or None; the prepared frames, or the first).

    Still images, and animations whose frames come out of :func:`_prepare` in different sizes,
    get no strip: every frame is finished on its own.
    """
    if frames > 1 and _prepares_as_strip(image, options):
        strip = _prepare(image, options, header)
        return strip, [strip.crop(0, 0, strip.width, strip.height // frames)]
    pages = [_prepare(page, options, header) for page in _split(image, frames)]
    if frames > 1 and len({(page.width, page.height) for page in pages}) == 1:
        return steps.stack(pages), pages[:1]
    return None, pages


def _prepares_as_strip(image: pyvips.Image, options: Options) -> bool:
    """Whether :func:`_prepare` of the whole strip equals it frame by frame (no step that moves
    rows between frames: orientation, trim, rotation or a vertical flip)."""
    if image.get_typeof("orientation") != 0 and image.get("orientation") != 1:
        return False
    return options.trim is None and not options.rotate and options.flip in (None, "h")


def _detect(
    data: bytes,
    header: Header,
    options: Options,
    working: Size,
    detector: Detector | None,
    timer: Timer,
) -> Faces:
    if detector is None:
        return Faces(fallback="face detection is not available")
    if options.trim is not None and options.trim.border:
        return Faces(fallback="gravity=face cannot be combined with trim=border")
    inference, factor = geometry.inference_size(working, INFERENCE_CAP)
    with timer("decode"):
        shrink = jpeg_shrink(1 / factor) if header.format == "jpeg" else 1
        page = load(data, header, animated=False, shrink=shrink)
        page = _prepare(page, options, header)
        array = steps.inference_array(page, inference)
    try:
        with timer("detect"):
            found = detector.detect([array])[0]
    except DetectionFailed as error:
        return Faces(fallback=f"face detection failed: {error}", degraded=True)
    faces = tuple(face.scaled(factor) for face in found)
    if not faces:
        return Faces(fallback="no face found")
    return Faces(found=faces)


def _auto_plan(page: pyvips.Image, working: Size, plan: Plan, options: Options) -> Plan:
    scale = page.width / working.width
    crop = Size(max(1, round(plan.crop.width * scale)), max(1, round(plan.crop.height * scale)))
    x, y = steps.attention_point(page, crop)
    return geometry.plan(
        working,
        options.target_width,
        options.target_height,
        options.fit,
        options.gravity,
        focus=(x / scale, y / scale),
        cap=INFERENCE_CAP,
    )


def _check_output(plan: Plan, frames: int, limits: Limits) -> None:
    pixels = plan.canvas.width * plan.canvas.height * frames
    if pixels > limits.max_output_pixels:
        raise LimitError(
            f"The output would be {plan.canvas.width}x{plan.canvas.height}"
            f"{f' x {frames} frames' if frames > 1 else ''}: expected at most "
            f"{limits.max_output_pixels / 1e6:g} megapixels"
        )


def _finish(
    page: pyvips.Image, plan: Plan, options: Options, loaded_scale: float, fmt: str
) -> pyvips.Image:
    page = steps.crop_resize(page, plan, loaded_scale)
    page = steps.pad(page, plan, options.background)
    page = steps.adjust(page, options)
    page = steps.blur(page, options.blur)
    page = steps.sharpen(page, options.sharpen)
    return steps.flatten(page, options.background, fmt in KEEPS_ALPHA)


def _finish_strip(
    strip: pyvips.Image,
    frames: int,
    plan: Plan,
    options: Options,
    loaded_scale: float,
    fmt: str,
) -> pyvips.Image:
    """:func:`_finish` of every frame of a strip, without a pipeline per frame where the step
    reads no neighbouring pixels across a frame's edge (blur and sharpen run frame by frame)."""
    strip = steps.crop_resize_strip(strip, frames, plan, loaded_scale)
    strip = steps.pad_strip(strip, frames, plan, options.background)
    strip = steps.adjust(strip, options)
    if options.blur > 0 or options.sharpen > 0:
        strip = steps.each(
            strip,
            frames,
            lambda page: steps.sharpen(steps.blur(page, options.blur), options.sharpen),
        )
    strip = steps.flatten(strip, options.background, fmt in KEEPS_ALPHA)
    strip = strip.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", strip.height // frames)
    return strip


def _join(pages: list[pyvips.Image]) -> pyvips.Image:
    if len(pages) == 1:
        return pages[0]
    joined = pyvips.Image.arrayjoin(pages, across=1)
    joined = joined.copy()
    joined.set_type(pyvips.GValue.gint_type, "page-height", pages[0].height)
    return joined


def _describe(
    header: Header, options: Options, plan: Plan, faces: Faces, fmt: str, frames: int
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
        "faces": [
            {"box": [round(v, 1) for v in face.box], "score": round(face.score, 4)}
            for face in faces.found
        ],
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


def _box(box: Box) -> list[float]:
    return [round(box.left, 1), round(box.top, 1), round(box.right, 1), round(box.bottom, 1)]
