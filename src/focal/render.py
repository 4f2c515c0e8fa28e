"""The pipeline's output frames: the decoded source prepared (as a strip of frames where no step
moves rows between frames, frame by frame otherwise) and finished to the plan, step by step
(:mod:`focal.steps`): crop and resize, pad, adjust, blur, sharpen, redact, draw, border,
flatten."""

from __future__ import annotations

from collections.abc import Sequence

import pyvips

from focal import steps
from focal.decode import Header
from focal.encode import KEEPS_ALPHA
from focal.geometry import Box, Plan, Size
from focal.options import Options, Overlay
from focal.source import prepare, split

MATERIALISE_PIXELS = 4_000_000


def render(
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
        joined = finish_strip(strip, frames, plan, options, loaded_scale, fmt, hidden, layers)
    else:
        finished = [
            finish(page, plan, options, loaded_scale, fmt, hidden[i] if hidden else [], layers)
            for i, page in enumerate(pages)
        ]
        joined = join(finished)
    if joined.width * joined.height <= MATERIALISE_PIXELS:
        joined = joined.copy_memory()
    return joined


def prepare_all(
    image: pyvips.Image, frames: int, options: Options, header: Header
) -> tuple[pyvips.Image | None, list[pyvips.Image]]:
    """(the prepared strip of an animated source, or None; the prepared frames, or the first).

    Still images, and animations whose frames come out of :func:`focal.source.prepare` in
    different sizes, get no strip: every frame is finished on its own.
    """
    if frames > 1 and _prepares_as_strip(image, options):
        strip = prepare(image, options, header)
        return strip, [strip.crop(0, 0, strip.width, strip.height // frames)]
    pages = [prepare(page, options, header) for page in split(image, frames)]
    if frames > 1 and len({(page.width, page.height) for page in pages}) == 1:
        return steps.stack(pages), pages[:1]
    return None, pages


def _prepares_as_strip(image: pyvips.Image, options: Options) -> bool:
    """Whether :func:`focal.source.prepare` of the whole strip equals it frame by frame (no step
    that moves rows between frames: orientation, trim, rotation or a vertical flip)."""
    if image.get_typeof("orientation") != 0 and image.get("orientation") != 1:
        return False
    return options.trim is None and not options.rotate and options.flip in (None, "h")


def finish(
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


def finish_strip(
    strip: pyvips.Image,
    frames: int,
    plan: Plan,
    options: Options,
    loaded_scale: float,
    fmt: str,
    hidden: list[list[Box]],
    layers: Sequence[steps.Layer] = (),
) -> pyvips.Image:
    """:func:`finish` of every frame of a strip, without a pipeline per frame where the step
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


def join(pages: list[pyvips.Image]) -> pyvips.Image:
    if len(pages) == 1:
        return pages[0]
    joined = pyvips.Image.arrayjoin(pages, across=1)
    joined = joined.copy()
    joined.set_type(pyvips.GValue.gint_type, "page-height", pages[0].height)
    return joined
