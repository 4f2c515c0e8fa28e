"""The transformation core: bytes + options in, encoded bytes (or a JSON description) out.

The whole pipeline, in order (each step a small function in :mod:`focal.steps`):

    read_header -> check limits -> [detect faces on a <=1024 px copy] -> plan (focal.geometry)
    -> load with shrink-on-load -> orient -> sRGB -> trim -> flip/rotate -> crop+resize -> pad
    -> adjust (brightness, contrast, gamma, saturation) -> blur -> sharpen -> [redact]
    -> [draw overlays] -> [border] -> flatten -> encode

Animated sources run every frame through the same steps with the same plan, on the strip of
frames (libvips' page-height layout) where a step cannot mix one frame's pixels into the next
(see :mod:`focal.steps`), frame by frame where it can.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyvips

from focal import geometry, steps
from focal.decode import ANIMATED, MIME, Header, check, jpeg_shrink, load, read_header
from focal.detection import DetectionFailed, Detector, Face, faces_and_candidates, inference_cap
from focal.encode import ANIMATES, KEEPS_ALPHA, choose_format, content_type, encode
from focal.errors import (
    DeadlineError,
    FocalError,
    ImageError,
    LimitError,
    OptionError,
    RedactionError,
    expected,
)
from focal.geometry import (
    DETECTION_FAILED,
    INFERENCE_CAP,
    NO_DETECTOR,
    NO_FACE,
    Box,
    Plan,
    Size,
)
from focal.options import Format, GravityMode, Options, Overlay, Trim, check_rules

MATERIALISE_PIXELS = 4_000_000


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 100_000_000  # per frame, read from the header before decoding
    max_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 50_000_000  # all output frames together
    max_frames: int = 300
    max_animation_pixels: int = 100_000_000  # frames decoded x canvas pixels, all frames together


# The detection side of face crops (docs/detector.md): "output" follows the output's scale,
# "cap" is always the detector's side. Redaction always detects at the detector's side.
FACE_CROP_SIDES = ("output", "cap")
FACE_CROP_SIDE = "cap"


class Cancel:
    """A transformation's off switch, thrown from another thread (the request's deadline).

    Every source image the pipeline loads is registered with :meth:`watch`; :meth:`cancel` sets
    libvips' kill flag on each, so the computation running on them stops at its next tile and
    raises, and the pipeline checks :attr:`cancelled` between its steps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: list[pyvips.Image] = []
        self.cancelled = False

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        with self._lock:
            self._images.append(image)
            if self.cancelled:
                image.set_kill(True)
        return image

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            for image in self._images:
                image.set_kill(True)

    def check(self) -> None:
        if self.cancelled:
            raise DeadlineError("The image took too long to produce")

    def release(self) -> None:
        with self._lock:
            self._images.clear()


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
    """What detection gave: the faces, or why gravity=face falls back (to centre)."""

    found: tuple[Face, ...] = ()
    fallback: str | None = None
    degraded: bool = False
    candidates: tuple[Face, ...] = ()  # weak detections: they only steer a face crop


TRUNCATED = "the source is truncated or damaged: the part that could not be decoded is grey"


def transform(
    data: bytes,
    options: Options,
    *,
    detector: Detector | None = None,
    limits: Limits = Limits(),
    accept: str | None = None,
    cancel: Cancel | None = None,
    overlays: Mapping[str, bytes] | None = None,
    face_crop_side: str = FACE_CROP_SIDE,
) -> Result:
    """Run the whole pipeline. Raises :class:`focal.errors.FocalError` subclasses only.

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
    if face_crop_side not in FACE_CROP_SIDES:
        raise expected("face_crop_side", "one of " + ", ".join(FACE_CROP_SIDES), face_crop_side)
    drawn = dict(overlays or {})
    run = _Run(data, options, detector, limits, accept, cancel or Cancel(), drawn, face_crop_side)
    try:
        try:
            return _transform(run, fail_on="warning")
        except pyvips.Error as strict_error:
            run.cancel.check()
            detail = str(strict_error)
        try:
            return _transform(run, fail_on="none")
        except pyvips.Error as error:
            run.cancel.check()
            detail = f"{detail}; {error}"
    finally:
        run.cancel.release()
    raise ImageError("The source image is truncated or corrupt", detail=detail)


@dataclass(frozen=True)
class _Run:
    data: bytes
    options: Options
    detector: Detector | None
    limits: Limits
    accept: str | None
    cancel: Cancel
    overlays: dict[str, bytes] = field(default_factory=dict)
    face_crop_side: str = FACE_CROP_SIDE

    @property
    def cap(self) -> int:
        """The inference image's largest side: the detector's (SPEC section 2, step 1)."""
        return INFERENCE_CAP if self.detector is None else inference_cap(self.detector)


def detection_side(options: Options, working: Size, cap: int, face_crop_side: str) -> int:
    """The side detection runs at: ``cap``, except for a zoom=0 face crop with a cropping fit and
    both sides given, without redaction, under ``face_crop_side="output"``: twice the output's
    scale (geometry.crop_detection_side). Redaction never detects below ``cap``."""
    width, height = options.target_width, options.target_height
    if (
        face_crop_side != "output"
        or options.redact
        or not options.face_gravity
        or options.zoom != 0
        or options.fit not in geometry.CROPPING_FITS
        or width is None
        or height is None
    ):
        return cap
    return geometry.crop_detection_side(working, Size(width, height), options.fit, cap)


def _transform(run: _Run, *, fail_on: str) -> Result:
    """The pipeline once, decoding with libvips' ``fail_on`` level."""
    timer = Timer()
    header = _checked_header(run, timer)
    run = _resolve_trim_border(run, header, timer, fail_on)
    options = run.options
    drawn = _overlay_images(run, timer, fail_on)
    fmt, negotiated, frames = _output_format(run, header)
    working = _working_size(header, options)
    faces = Faces()
    if options.needs_faces:
        faces = _detect(run, header, working, timer, fail_on)
        run.cancel.check()
    plan = _plan(options, working, faces, cap=run.cap)
    _check_output(plan, frames, run.limits, steps.border_sides(options.border, options.dpr))
    shrink = 1 if options.trim and options.trim.border else _shrink_for(header, plan)
    with timer("decode"):
        image = run.cancel.watch(
            load(run.data, header, animated=frames > 1, shrink=shrink, fail_on=fail_on)
        )
        strip, pages = _prepare_all(image, frames, options, header)
    if options.gravity.mode is GravityMode.AUTO:
        plan = _auto_plan(pages[0], working, plan, options, run.cap)
    if faces.fallback and options.face_gravity:
        plan = replace(plan, fallback=faces.fallback)
    hidden = _redactions(run, header, working, plan, faces, frames, timer, fail_on)
    description = _describe(header, options, plan, faces, fmt, frames, working)
    _describe_extras(description, options, hidden, fail_on)
    if options.format is Format.JSON:
        description["timings"] = dict(timer.ms)
        body = json.dumps(description, indent=2).encode()
        return _result(body, "application/json", "json", plan, faces, False, description, timer)
    run.cancel.check()
    with timer("process"):
        joined = _render(strip, pages, frames, plan, options, working, fmt, hidden, drawn)
    run.cancel.check()
    with timer("encode"):
        body = encode(joined, fmt, options)
    description["timings"] = dict(timer.ms)
    return _result(body, content_type(fmt), fmt, plan, faces, negotiated, description, timer)


def _checked_header(run: _Run, timer: Timer) -> Header:
    """The source's header, once the options' rules and every limit it can be held to pass."""
    check_rules(run.options)  # Options built in code, not parsed, meet the same rules
    limits = run.limits
    if len(run.data) > limits.max_bytes:
        raise LimitError(
            f"The source is {len(run.data)} bytes: expected at most {limits.max_bytes}"
        )
    with timer("decode"):
        header = read_header(run.data)
        check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
    return header


def _resolve_trim_border(run: _Run, header: Header, timer: Timer, fail_on: str) -> _Run:
    """trim=border turned into the pixels it cuts, found on the first frame (oriented, sRGB):
    from there on it is a trim like any other, and the plan is made for the trimmed image."""
    trim = run.options.trim
    if trim is None or not trim.border:
        return run
    with timer("decode"):
        page = run.cancel.watch(load(run.data, header, animated=False, fail_on=fail_on))
        page = steps.to_srgb(steps.orient(page))
        left, top, width, height = steps.border_box(page, trim)
    right, bottom = page.width - left - width, page.height - top - height
    sides = Trim(top=top, right=right, bottom=bottom, left=left)
    return replace(run, options=replace(run.options, trim=sides))


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


def _output_format(run: _Run, header: Header) -> tuple[str, bool, int]:
    """(format, whether it came from Accept, frames decoded), the animation budget checked."""
    options = run.options
    animated = options.anim and header.frames > 1 and header.format in ANIMATED
    fmt, negotiated = choose_format(options, header, run.accept, animated)
    animated = animated and (fmt in ANIMATES or options.format is Format.JSON)
    frames = header.frames if animated else 1
    _check_animation(header, frames, run.limits)
    return fmt, negotiated, frames


def _plan(
    options: Options,
    working: Size,
    faces: Faces = Faces(),
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


def _describe_extras(
    description: dict[str, Any], options: Options, hidden: list[list[Box]], fail_on: str
) -> None:
    """The border in the output size, the faces redacted, and whether the source was damaged."""
    border_width, border_height = _border_size(options)
    description["width"] += border_width
    description["height"] += border_height
    if options.redact:
        description["redacted"] = sum(len(boxes) for boxes in hidden)
    description["source_warning"] = TRUNCATED if fail_on == "none" else None


def _render(
    strip: pyvips.Image | None,
    pages: list[pyvips.Image],
    frames: int,
    plan: Plan,
    options: Options,
    working: Size,
    fmt: str,
    hidden: list[list[Box]],
    drawn: list[tuple[Overlay, pyvips.Image]],
) -> pyvips.Image:
    """The finished output frames, joined (in memory when small: "process" then holds decode and
    resize, and "encode" only the encoding)."""
    loaded_scale = pages[0].width / working.width
    layers = steps.overlay_layers(drawn, plan.canvas, options.dpr)
    if strip is not None:
        joined = _finish_strip(strip, frames, plan, options, loaded_scale, fmt, hidden, layers)
    else:
        finished = [
            _finish(page, plan, options, loaded_scale, fmt, hidden[i] if hidden else [], layers)
            for i, page in enumerate(pages)
        ]
        joined = _join(finished)
    if joined.width * joined.height <= MATERIALISE_PIXELS:
        joined = joined.copy_memory()
    return joined


def _border_size(options: Options) -> tuple[int, int]:
    top, right, bottom, left = steps.border_sides(options.border, options.dpr)
    return left + right, top + bottom


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


def _working_size(header: Header, options: Options) -> Size:
    """The size the geometry works on: oriented, trimmed (by pixels), rotated."""
    width, height = header.oriented_size
    trim = options.trim
    if trim is not None and not trim.border:
        top, right, bottom, left = trim.sides(width, height)
        width -= left + right
        height -= top + bottom
        if width < 1 or height < 1 or min(right, bottom) < 0:
            raise OptionError(
                f"Expected a trim smaller than the image ({header.oriented_size[0]}x"
                f"{header.oriented_size[1]}) for trim but received '{top};{right};"
                f"{bottom};{left}'"
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


def _detect(run: _Run, header: Header, working: Size, timer: Timer, fail_on: str) -> Faces:
    options, detector = run.options, run.detector
    if detector is None:
        return Faces(fallback=NO_DETECTOR)
    side = detection_side(options, working, run.cap, run.face_crop_side)
    inference, factor = geometry.inference_size(working, side)
    with timer("decode"):
        shrink = jpeg_shrink(1 / factor) if header.format == "jpeg" else 1
        page = run.cancel.watch(
            load(run.data, header, animated=False, shrink=shrink, fail_on=fail_on)
        )
        page = _prepare(page, options, header)
        array = steps.inference_array(page, inference)
    weak: list[Face] = []
    try:
        with timer("detect"):
            if options.face_gravity or options.redact:  # faces above the crop threshold
                found, weak = faces_and_candidates(detector, [array])[0]
            else:
                found = detector.detect([array])[0]
    except DetectionFailed as error:
        return Faces(fallback=DETECTION_FAILED + str(error), degraded=True)
    faces = tuple(face.scaled(factor) for face in found)
    candidates = tuple(face.scaled(factor) for face in weak)
    if not faces:
        return Faces(fallback=NO_FACE, candidates=candidates)
    return Faces(found=faces, candidates=candidates)


def _redactions(
    run: _Run,
    header: Header,
    working: Size,
    plan: Plan,
    faces: Faces,
    frames: int,
    timer: Timer,
    fail_on: str,
) -> list[list[Box]]:
    """With redact=faces: the face boxes to hide, per output frame, on the output canvas. Every
    frame of an animation is detected on its own (faces move). Never fails open: without a
    working detector the request fails (RedactionError) instead of showing the faces."""
    if not run.options.redact:
        return []
    detector = run.detector
    if detector is None or faces.fallback not in (None, NO_FACE):
        raise RedactionError(
            "Faces cannot be redacted now (" + (faces.fallback or NO_DETECTOR) + "): "
            "the image is not served unredacted"
        )
    if frames == 1:
        found = [faces.found]
    else:
        found = _detect_frames(run, detector, header, working, frames, timer, fail_on)
    return [[geometry.output_box(Box(*face.box), plan) for face in each] for each in found]


def _detect_frames(
    run: _Run,
    detector: Detector,
    header: Header,
    working: Size,
    frames: int,
    timer: Timer,
    fail_on: str,
) -> list[tuple[Face, ...]]:
    """The faces of every frame of an animation, in one batch, in working pixels."""
    inference, factor = geometry.inference_size(working, run.cap)
    with timer("decode"):
        strip = run.cancel.watch(load(run.data, header, animated=True, fail_on=fail_on))
        arrays = [
            steps.inference_array(_prepare(page, run.options, header), inference)
            for page in _split(strip, frames)
        ]
    try:
        with timer("detect"):  # faces above the crop threshold, as for a single frame
            found = [faces for faces, _ in faces_and_candidates(detector, arrays)]
    except DetectionFailed as error:
        raise RedactionError(
            f"Faces cannot be redacted now ({DETECTION_FAILED}{error}): "
            "the image is not served unredacted"
        ) from None
    return [tuple(face.scaled(factor) for face in each) for each in found]


def _auto_plan(page: pyvips.Image, working: Size, plan: Plan, options: Options, cap: int) -> Plan:
    scale = page.width / working.width
    crop = Size(max(1, round(plan.crop.width * scale)), max(1, round(plan.crop.height * scale)))
    x, y = steps.attention_point(page, crop)
    return _plan(options, working, focus=(x / scale, y / scale), cap=cap)


def _check_animation(header: Header, frames: int, limits: Limits) -> None:
    """Refuse, before any pixel, an animation whose frames together (each decoded at the full
    canvas size, however small the file) are more than ``max_animation_pixels``."""
    pixels = frames * header.width * header.height
    if frames > 1 and pixels > limits.max_animation_pixels:
        raise LimitError(
            f"The animation is {frames} frames of {header.width}x{header.height} "
            f"({pixels / 1e6:.1f} megapixels in all): expected at most "
            f"{limits.max_animation_pixels / 1e6:g} megapixels across all frames "
            "(anim=false takes the first frame only)"
        )


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


def _finish(
    page: pyvips.Image,
    plan: Plan,
    options: Options,
    loaded_scale: float,
    fmt: str,
    hidden: list[Box],
    layers: Sequence[steps.Layer] = (),
) -> pyvips.Image:
    page = steps.crop_resize(page, plan, loaded_scale)
    page = steps.pad(page, plan, options.background)
    page = steps.adjust(page, options)
    page = steps.blur(page, options.blur)
    page = steps.sharpen(page, options.sharpen)
    page = steps.redact(page, hidden, options.redact_style, options.redact_strength)
    page = steps.draw(page, layers)
    page = steps.border(page, options.border, options.dpr)
    return steps.flatten(page, options.background, fmt in KEEPS_ALPHA)


def _finish_strip(
    strip: pyvips.Image,
    frames: int,
    plan: Plan,
    options: Options,
    loaded_scale: float,
    fmt: str,
    hidden: list[list[Box]],
    layers: Sequence[steps.Layer] = (),
) -> pyvips.Image:
    """:func:`_finish` of every frame of a strip, without a pipeline per frame where the step
    reads no neighbouring pixels across a frame's edge (blur, sharpen, draw and border run frame
    by frame)."""
    strip = steps.crop_resize_strip(strip, frames, plan, loaded_scale)
    strip = steps.pad_strip(strip, frames, plan, options.background)
    strip = steps.adjust(strip, options)
    if options.blur > 0 or options.sharpen > 0:
        strip = steps.each(
            strip,
            frames,
            lambda page: steps.sharpen(steps.blur(page, options.blur), options.sharpen),
        )
    if hidden:
        strip = steps.redact_strip(
            strip, frames, hidden, options.redact_style, options.redact_strength
        )
    strip = steps.draw_strip(strip, frames, layers)
    if options.border is not None:
        strip = steps.each(
            strip, frames, lambda page: steps.border(page, options.border, options.dpr)
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
