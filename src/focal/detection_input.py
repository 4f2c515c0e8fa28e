"""The pipeline's first phase: what a face detector is to see for a source and options, and the
faces it answers mapped back onto the image the geometry plans on.

:func:`detection_input` decodes the inference copies (the first frame at the detection side;
with redact=faces on an animation, every frame at the detector's side too), :func:`detect` runs
a detector on them, and :meth:`DetectionInput.faces` turns answers found anywhere (another
process, a Ray actor) into :class:`Faces`, which the second phase,
:func:`focal.pipeline.transform`, takes instead of a detector. The detection side rules live
here: :func:`detection_side`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from focal import geometry, steps
from focal.control import Cancel, Timer
from focal.decode import Header, jpeg_shrink, load
from focal.detection import (
    DetectionFailed,
    Detector,
    Face,
    RGBImage,
    faces_and_candidates,
    inference_cap,
)
from focal.errors import expected
from focal.geometry import DETECTION_FAILED, INFERENCE_CAP, NO_FACE, Size
from focal.geometry import FACE_CROP_SIDE as FACE_CROP_SIDE
from focal.geometry import FACE_CROP_SIDES as FACE_CROP_SIDES
from focal.options import Format, Options
from focal.source import (
    DEFAULT_LIMITS,
    Limits,
    checked_header,
    decoding,
    output_format,
    prepare,
    resolve_trim_border,
    split,
    working_size,
)

Answer = tuple[list[Face], list[Face]]  # a detector's (faces, weak candidates) for one image


@dataclass(frozen=True)
class Faces:
    """What detection gave, in working pixels: the faces, or why gravity=face falls back (to
    centre); with redact=faces on an animation, every frame's faces too."""

    found: tuple[Face, ...] = ()
    fallback: str | None = None
    degraded: bool = False
    candidates: tuple[Face, ...] = ()  # weak detections: they only steer a face crop
    frames: tuple[tuple[Face, ...], ...] = ()  # redaction of an animation: faces per frame
    frames_failed: str | None = None  # why the frames' faces are missing (redaction fails)
    cap: int = INFERENCE_CAP  # the detector's side: the geometry's inference cap
    damaged: bool = False  # the source decoded only as far as it could (fail_on="none")
    timings: dict[str, float] = field(default_factory=dict)  # ms: decode, detect


@dataclass(frozen=True)
class DetectionInput:
    """The images a detector is to see (:attr:`images`: the page, then the frames), and what
    maps its answers back (:meth:`faces`). ``page`` is None where the options need no faces."""

    page: RGBImage | None = None  # the first frame, at the detection side
    frames: tuple[RGBImage, ...] = ()  # redact=faces on an animation: every frame, at ``cap``
    page_scale: float = 1.0  # inference pixels -> working pixels
    frame_scale: float = 1.0
    cap: int = INFERENCE_CAP
    damaged: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None  # why a face crop needs no detection (page is None then)

    @property
    def images(self) -> list[RGBImage]:
        return [] if self.page is None else [self.page, *self.frames]

    def faces(self, answers: Sequence[Answer | DetectionFailed]) -> Faces:
        """The detector's answers for :attr:`images` (in order; a DetectionFailed for an image
        it could not answer; the frames' may be left out after the page failed) as Faces."""
        base = Faces(cap=self.cap, damaged=self.damaged, timings=dict(self.timings))
        if self.page is None:
            return replace(base, fallback=self.fallback)
        page = answers[0]
        if isinstance(page, DetectionFailed):
            return replace(base, fallback=DETECTION_FAILED + str(page), degraded=True)
        found = tuple(face.scaled(self.page_scale) for face in page[0])
        candidates = tuple(face.scaled(self.page_scale) for face in page[1])
        faces = replace(base, found=found, candidates=candidates)
        faces = faces if found else replace(faces, fallback=NO_FACE)
        failed = [a for a in answers[1:] if isinstance(a, DetectionFailed)]
        if failed:
            return replace(faces, frames_failed=DETECTION_FAILED + str(failed[0]))
        frames = tuple(
            tuple(face.scaled(self.frame_scale) for face in answer[0])
            for answer in answers[1:]
            if not isinstance(answer, DetectionFailed)
        )
        return replace(faces, frames=frames)


def check_face_crop_side(face_crop_side: str) -> None:
    if face_crop_side not in FACE_CROP_SIDES:
        raise expected("face_crop_side", "one of " + ", ".join(FACE_CROP_SIDES), face_crop_side)


def detection_input(
    data: bytes,
    options: Options,
    *,
    cap: int = INFERENCE_CAP,
    limits: Limits = DEFAULT_LIMITS,
    accept: str | None = None,
    cancel: Cancel | None = None,
    face_crop_side: str = FACE_CROP_SIDE,
) -> DetectionInput:
    """Phase 1: the inference copies of ``data`` for ``options``, decoded at most ``cap`` pixels
    per side (the detector's ``max_side``), after the checks :func:`focal.pipeline.transform`
    makes (FocalError subclasses only). ``accept`` and ``face_crop_side`` as for transform:
    they decide how many frames the output has and the side a face crop detects at."""
    check_face_crop_side(face_crop_side)
    cancel = cancel or Cancel()
    timer = Timer()
    header = checked_header(data, options, limits, timer)
    if not options.needs_faces:
        return DetectionInput(cap=cap)

    def attempt(fail_on: str) -> DetectionInput:
        resolved = resolve_trim_border(data, options, header, cancel, timer, fail_on)
        frames = output_format(resolved, header, accept, limits)[2]
        working = working_size(header, resolved)
        if not faces_matter(resolved, working):
            fallback = geometry.FACES_CANNOT_MOVE
            return DetectionInput(cap=cap, timings=dict(timer.ms), fallback=fallback)
        side = detection_side(resolved, working, cap, face_crop_side)
        source = _Source(data, resolved, header, cancel, fail_on)
        with timer("decode"):
            page, page_scale = _page(source, working, side)
            images: tuple[RGBImage, ...] = ()
            frame_scale = 1.0
            if resolved.redact and frames > 1:
                images, frame_scale = _frames(source, working, cap, frames)
        damaged = fail_on == "none"
        timings = dict(timer.ms)
        return DetectionInput(page, images, page_scale, frame_scale, cap, damaged, timings)

    return decoding(attempt, cancel)


def detect(inputs: DetectionInput, detector: Detector) -> Faces:
    """The detector's faces for phase 1's images: the page in one call, then the frames in
    another (not after the page failed)."""
    if inputs.page is None:
        return inputs.faces([])
    timer = Timer(inputs.timings)
    with timer("detect"):
        answers = _answer(detector, [inputs.page])
        if inputs.frames and not isinstance(answers[0], DetectionFailed):
            answers += _answer(detector, list(inputs.frames))
    return replace(inputs.faces(answers), timings=timer.ms)


def _answer(detector: Detector, images: list[RGBImage]) -> list[Answer | DetectionFailed]:
    """One detector call: faces above the crop threshold and the weak candidates per image, or
    the failure for every image."""
    try:
        return list(faces_and_candidates(detector, images))
    except DetectionFailed as error:
        return [error] * len(images)


def detector_faces(
    data: bytes,
    options: Options,
    detector: Detector | None,
    *,
    limits: Limits,
    accept: str | None,
    cancel: Cancel,
    face_crop_side: str,
) -> Faces:
    """Both steps of phase 1 with ``detector`` (none: gravity=face falls back, redaction fails)."""
    check_face_crop_side(face_crop_side)
    if not options.needs_faces:
        return Faces()
    if detector is None:
        return Faces(fallback=geometry.NO_DETECTOR)
    cap = inference_cap(detector)
    inputs = detection_input(
        data,
        options,
        cap=cap,
        limits=limits,
        accept=accept,
        cancel=cancel,
        face_crop_side=face_crop_side,
    )
    cancel.check()
    return detect(inputs, detector)


def faces_matter(options: Options, working: Size) -> bool:
    """Whether these options need the faces of a ``working``-sized image: always for
    redact=faces and for format=json (its description lists them); for a face crop only where
    a face could move the crop (geometry.faces_can_move_crop)."""
    if options.redact or options.format is Format.JSON:
        return True
    return geometry.faces_can_move_crop(
        working, options.target_width, options.target_height, options.fit, options.zoom
    )


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


@dataclass(frozen=True)
class _Source:
    data: bytes
    options: Options
    header: Header
    cancel: Cancel
    fail_on: str


def _page(source: _Source, working: Size, side: int) -> tuple[RGBImage, float]:
    """The first frame, prepared, at most ``side`` per side (shrink-on-load where it can)."""
    inference, factor = geometry.inference_size(working, side)
    header = source.header
    shrink = jpeg_shrink(1 / factor) if header.format == "jpeg" else 1
    page = load(source.data, header, animated=False, shrink=shrink, fail_on=source.fail_on)
    page = prepare(source.cancel.watch(page), source.options, header)
    return steps.inference_array(page, inference), factor


def _frames(
    source: _Source, working: Size, cap: int, frames: int
) -> tuple[tuple[RGBImage, ...], float]:
    """Every frame of an animation, prepared, at most ``cap`` per side (faces move)."""
    inference, factor = geometry.inference_size(working, cap)
    strip = load(source.data, source.header, animated=True, fail_on=source.fail_on)
    strip = source.cancel.watch(strip)
    arrays = tuple(
        steps.inference_array(prepare(page, source.options, source.header), inference)
        for page in split(strip, frames)
    )
    return arrays, factor
