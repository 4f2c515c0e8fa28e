"""The source as both phases of the pipeline read it: the limits it is held to, its checked
header, trim=border turned into pixels, the frames the output has, the working size the
geometry plans on, and a frame prepared for the plan (orient, sRGB, trim, flip and rotate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import pyvips

from focal import steps
from focal.control import Cancel, Timer
from focal.decode import ANIMATED, Header, check, load, read_header
from focal.encode import ANIMATES, choose_format
from focal.errors import ImageError, LimitError, OptionError
from focal.geometry import Size
from focal.options import Format, Options, Trim, check_rules

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 100_000_000  # per frame, read from the header before decoding
    max_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 50_000_000  # all output frames together
    max_frames: int = 300
    max_animation_pixels: int = 100_000_000  # frames decoded x canvas pixels, all frames together


DEFAULT_LIMITS = Limits()


def checked_header(data: bytes, options: Options, limits: Limits, timer: Timer) -> Header:
    """The source's header, once the options' rules and every limit it can be held to pass."""
    check_rules(options)  # Options built in code, not parsed, meet the same rules
    if len(data) > limits.max_bytes:
        raise LimitError(f"The source is {len(data)} bytes: expected at most {limits.max_bytes}")
    with timer("decode"):
        header = read_header(data)
        check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
    return header


def resolve_trim_border(
    data: bytes, options: Options, header: Header, cancel: Cancel, timer: Timer, fail_on: str
) -> Options:
    """trim=border turned into the pixels it cuts, found on the first frame (oriented, sRGB):
    from there on it is a trim like any other, and the plan is made for the trimmed image."""
    trim = options.trim
    if trim is None or not trim.border:
        return options
    with timer("decode"):
        page = cancel.watch(load(data, header, animated=False, fail_on=fail_on))
        page = steps.to_srgb(steps.orient(page))
        left, top, width, height = steps.border_box(page, trim)
    right, bottom = page.width - left - width, page.height - top - height
    return replace(options, trim=Trim(top=top, right=right, bottom=bottom, left=left))


def output_format(
    options: Options, header: Header, accept: str | None, limits: Limits
) -> tuple[str, bool, int]:
    """(format, whether it came from Accept, frames decoded), the animation budget checked."""
    animated = options.anim and header.frames > 1 and header.format in ANIMATED
    fmt, negotiated = choose_format(options, header, accept, animated)
    animated = animated and (fmt in ANIMATES or options.format is Format.JSON)
    frames = header.frames if animated else 1
    check_animation(header, frames, limits)
    return fmt, negotiated, frames


def check_animation(header: Header, frames: int, limits: Limits) -> None:
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


def working_size(header: Header, options: Options) -> Size:
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


def split(image: pyvips.Image, frames: int) -> list[pyvips.Image]:
    """The frames of a strip (libvips' page-height layout)."""
    if frames <= 1:
        return [image]
    height = image.height // frames
    return [image.crop(0, i * height, image.width, height) for i in range(frames)]


def prepare(page: pyvips.Image, options: Options, header: Header) -> pyvips.Image:
    """A decoded frame (or strip) in the working size's orientation: oriented, sRGB, trimmed,
    flipped and rotated."""
    page = steps.orient(page)
    page = steps.to_srgb(page)
    scale = page.width / header.oriented_size[0]
    page = steps.trim(page, options.trim, scale)
    return steps.rotate_flip(page, options)


def decoding(attempt: Callable[[str], T], cancel: Cancel, *, damaged: bool = False) -> T:
    """``attempt(fail_on)`` strictly (libvips' ``fail_on="warning"``), then, when libvips fails,
    once more as far as the source decodes (``"none"``: the rest grey); straight to ``"none"``
    for a source already known to be ``damaged``. A source that decodes neither way is an
    ImageError (415); a cancelled one a DeadlineError."""
    details = []
    for fail_on in ("none",) if damaged else ("warning", "none"):
        try:
            return attempt(fail_on)
        except pyvips.Error as error:
            cancel.check()
            details.append(str(error))
    raise ImageError("The source image is truncated or corrupt", detail="; ".join(details))
