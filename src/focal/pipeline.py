"""The transformation core: bytes + options in, encoded bytes (or a JSON description) out.

The whole pipeline, in order (each step a small function in :mod:`focal.steps`):

    read_header -> check limits -> [detect faces on a <=1024 px copy] -> plan (focal.geometry)
    -> load with shrink-on-load -> orient -> sRGB -> trim -> flip/rotate -> crop+resize -> pad
    -> adjust (brightness, contrast, gamma, saturation) -> blur -> sharpen -> [redact]
    -> [draw overlays] -> [border] -> flatten -> encode

It runs in two phases. The first, :mod:`focal.detection_input`, decodes what a face detector is
to see and maps its answers back (:class:`Faces`); the second, :func:`transform` with
``faces=``, plans, renders (:mod:`focal.render`) and encodes with faces found anywhere.
:func:`transform` with ``detector=`` runs both in one call.

Animated sources run every frame through the same steps with the same plan, on the strip of
frames (libvips' page-height layout) where a step cannot mix one frame's pixels into the next
(see :mod:`focal.steps`), frame by frame where it can.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pyvips

from focal import geometry, steps
from focal.control import Cancel, Timer
from focal.decode import Header, check, jpeg_shrink, load, read_header
from focal.describe import TRUNCATED, describe, describe_extras
from focal.detection import Detector
from focal.detection_input import (
    FACE_CROP_SIDE,
    FACE_CROP_SIDES,
    DetectionInput,
    Faces,
    detect,
    detection_input,
    detection_side,
    detector_faces,
)
from focal.encode import content_type, encode
from focal.errors import FocalError, LimitError, OptionError, RedactionError
from focal.geometry import INFERENCE_CAP, NO_FACE, Box, Plan, Size
from focal.options import Format, GravityMode, Options, Overlay
from focal.render import MATERIALISE_PIXELS, prepare_all, render
from focal.source import (
    DEFAULT_LIMITS,
    Limits,
    checked_header,
    decoding,
    output_format,
    resolve_trim_border,
    working_size,
)

__all__ = [
    "FACE_CROP_SIDE",
    "FACE_CROP_SIDES",
    "MATERIALISE_PIXELS",
    "TRUNCATED",
    "Cancel",
    "DetectionInput",
    "Faces",
    "Limits",
    "Result",
    "Timer",
    "detect",
    "detection_input",
    "detection_side",
    "overlay_error",
    "transform",
]


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
    source_warning: str | None = None  # the source was damaged, and served as far as it decodes
    description: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # ms: decode, detect, process, encode


def transform(
    data: bytes,
    options: Options,
    *,
    detector: Detector | None = None,
    faces: Faces | None = None,
    limits: Limits = DEFAULT_LIMITS,
    accept: str | None = None,
    cancel: Cancel | None = None,
    overlays: Mapping[str, bytes] | None = None,
    face_crop_side: str = FACE_CROP_SIDE,
) -> Result:
    """Run the whole pipeline. Raises :class:`focal.errors.FocalError` subclasses only.

    ``detector``: finds the faces (both phases in one call). ``faces``: the faces found already,
    from :func:`detection_input` of the same data, options, limits and accept (phase 2). With
    neither, gravity=face falls back to centre and redaction fails.

    ``overlays``: the bytes of every url in ``options.draw`` (the caller fetches them, through
    the same checks as the source); each is held to the source's byte and pixel limits, and all
    of them together to ``max_pixels``.

    ``face_crop_side``: ``output`` (a zoom=0 face crop detects at twice the output's scale,
    docs/detector.md) or ``cap`` (always at the detector's side). Redaction always detects at
    the detector's side.

    A source that decodes only with warnings (data cut short, a scan that ends before the image
    its header describes, corrupt segments) is served as far as it decodes, the rest grey as
    browsers show it, with :attr:`Result.source_warning` set; one that does not decode at all is
    an ImageError (415). ``cancel`` stops the work from another thread (DeadlineError, 504)."""
    if detector is not None and faces is not None:
        raise OptionError("transform takes a detector or the faces it found, not both")
    cancel = cancel or Cancel()
    try:
        if faces is None:
            faces = detector_faces(
                data,
                options,
                detector,
                limits=limits,
                accept=accept,
                cancel=cancel,
                face_crop_side=face_crop_side,
            )
        run = _Run(data, options, faces, limits, accept, cancel, dict(overlays or {}))
        return decoding(partial(_transform, run), cancel, damaged=faces.damaged)
    finally:
        cancel.release()


@dataclass(frozen=True)
class _Run:
    data: bytes
    options: Options
    faces: Faces
    limits: Limits
    accept: str | None
    cancel: Cancel
    overlays: dict[str, bytes] = field(default_factory=dict)


def _transform(run: _Run, fail_on: str) -> Result:
    """Phase 2 once, decoding with libvips' ``fail_on`` level."""
    timer = Timer(run.faces.timings)
    header = checked_header(run.data, run.options, run.limits, timer)
    options = resolve_trim_border(run.data, run.options, header, run.cancel, timer, fail_on)
    drawn = _overlay_images(run, timer, fail_on)
    fmt, negotiated, frames = output_format(options, header, run.accept, run.limits)
    working = working_size(header, options)
    faces = run.faces if options.needs_faces else Faces()
    run.cancel.check()
    plan = _plan(options, working, faces, cap=faces.cap)
    _check_output(plan, frames, run.limits, steps.border_sides(options.border, options.dpr))
    shrink = 1 if options.trim and options.trim.border else _shrink_for(header, plan)
    with timer("decode"):
        image = run.cancel.watch(
            load(run.data, header, animated=frames > 1, shrink=shrink, fail_on=fail_on)
        )
        strip, pages = prepare_all(image, frames, options, header)
    if options.gravity.mode is GravityMode.AUTO:
        plan = _auto_plan(pages[0], working, plan, options, faces.cap)
    if faces.fallback and options.face_gravity:
        plan = replace(plan, fallback=faces.fallback)
    hidden = _redactions(options, plan, faces, frames)
    description = describe(header, options, plan, faces, fmt, frames, working)
    describe_extras(description, options, hidden, fail_on)
    if options.format is Format.JSON:
        description["timings"] = dict(timer.ms)
        body = json.dumps(description, indent=2).encode()
        return _result(body, "application/json", "json", plan, faces, False, description, timer)
    run.cancel.check()
    with timer("process"):
        joined = render(strip, pages, frames, plan, options, working, fmt, hidden, drawn)
    run.cancel.check()
    with timer("encode"):
        body = encode(joined, fmt, options)
    description["timings"] = dict(timer.ms)
    return _result(body, content_type(fmt), fmt, plan, faces, negotiated, description, timer)


def _redactions(options: Options, plan: Plan, faces: Faces, frames: int) -> list[list[Box]]:
    """With redact=faces: the face boxes to hide, per output frame, on the output canvas. Every
    frame of an animation has its own faces (faces move). Never fails open: without faces found
    by a working detector for every frame, the request fails (RedactionError) instead of showing
    the faces."""
    if not options.redact:
        return []
    why = faces.fallback if faces.fallback not in (None, NO_FACE) else None
    if why is None and frames > 1:
        why = faces.frames_failed
        if why is None and len(faces.frames) != frames:
            why = f"the faces of {len(faces.frames)} frames were found, for {frames} frames"
    if why is not None:
        raise RedactionError(
            f"Faces cannot be redacted now ({why}): the image is not served unredacted"
        )
    found = [faces.found] if frames == 1 else list(faces.frames)
    return [[geometry.output_box(Box(*face.box), plan) for face in each] for each in found]


def _overlay_images(run: _Run, timer: Timer, fail_on: str) -> list[tuple[Overlay, pyvips.Image]]:
    """Every overlay of ``draw``, checked like a source (bytes, header, pixels; all overlays
    together at most ``max_pixels``) and loaded lazily (first frame). A problem is the error a
    source would get, naming the overlay (``draw[1] overlay 'logo.png': ...``)."""
    limits, loaded, pixels = run.limits, [], 0
    for index, spec in enumerate(run.options.draw):
        data = run.overlays.get(spec.url)
        if data is None:
            raise OptionError(
                f"Expected the overlay to be loaded for draw[{index}] but received {spec.url!r} "
                "unloaded: overlays are loaded by focal serve and focal transform"
            )
        try:
            with timer("decode"):
                if len(data) > limits.max_bytes:
                    raise LimitError(f"{len(data)} bytes: expected at most {limits.max_bytes}")
                header = read_header(data)
                check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
                pixels += header.width * header.height
                if pixels > limits.max_pixels:
                    raise LimitError(
                        f"the overlays are {pixels / 1e6:.1f} megapixels together: expected at "
                        f"most {limits.max_pixels / 1e6:g}"
                    )
                image = run.cancel.watch(load(data, header, animated=False, fail_on=fail_on))
        except FocalError as error:
            raise overlay_error(error, index, spec.url) from None
        loaded.append((spec, image))
    return loaded


def overlay_error(error: FocalError, index: int, url: str) -> FocalError:
    """The same error (class and status), its message naming the overlay."""
    named = copy.copy(error)
    named.public = f"draw[{index}] overlay {url!r}: {error.public}"
    named.args = (named.public,)
    return named


def _plan(
    options: Options,
    working: Size,
    faces: Faces,
    focus: tuple[float, float] | None = None,
    cap: int = INFERENCE_CAP,
) -> Plan:
    """geometry.plan for these options, with the faces found or gravity=auto's focus point."""
    return geometry.plan(
        working,
        options.target_width,
        options.target_height,
        options.fit,
        options.gravity,
        faces=[Box(*face.box) for face in faces.found],
        zoom=options.zoom,
        focus=focus,
        cap=cap,
        candidates=[Box(*face.box) for face in faces.candidates],
    )


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
    """The result; its size and source warning are the description's (border included)."""
    return Result(
        data=body,
        content_type=ctype,
        format=fmt,
        width=description["width"],
        height=description["height"],
        gravity_used=plan.gravity_used,
        degraded=faces.degraded,
        negotiated=negotiated,
        fallback=plan.fallback,
        description=description,
        timings=dict(timer.ms),
        source_warning=description["source_warning"],
    )


def _shrink_for(header: Header, plan: Plan) -> int:
    if header.format != "jpeg":
        return 1
    scale = min(plan.resize.width / plan.crop.width, plan.resize.height / plan.crop.height)
    return jpeg_shrink(scale)


def _auto_plan(page: pyvips.Image, working: Size, plan: Plan, options: Options, cap: int) -> Plan:
    scale = page.width / working.width
    crop = Size(max(1, round(plan.crop.width * scale)), max(1, round(plan.crop.height * scale)))
    x, y = steps.attention_point(page, crop)
    return _plan(options, working, Faces(), focus=(x / scale, y / scale), cap=cap)


def _check_output(
    plan: Plan, frames: int, limits: Limits, border: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> None:
    width = plan.canvas.width + border[1] + border[3]
    height = plan.canvas.height + border[0] + border[2]
    pixels = width * height * frames
    if pixels > limits.max_output_pixels:
        raise LimitError(
            f"The output would be {width}x{height}"
            f"{f' x {frames} frames' if frames > 1 else ''}: expected at most "
            f"{limits.max_output_pixels / 1e6:g} megapixels"
        )
