"""The image steps of the pipeline, each a small function of one frame. A step that is not asked
for returns the frame unchanged. No step decides geometry: :mod:`focal.geometry` does.

Animated sources are a strip: ``count`` frames of equal size stacked top to bottom (libvips'
page-height layout). The ``*_strip`` steps give each frame exactly what the one-frame step gives
it, without a pipeline per frame: a pass along x runs on the stacked strip (rows never cross a
frame), and a pass along y runs with the frames laid side by side (columns never cross a frame),
so no resampling kernel reads a neighbouring frame's rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyvips

from focal.detection import RGBImage
from focal.geometry import Box, Plan, Size
from focal.options import RGBA, Border, Options, RedactStyle, Trim

MAX_COORD = 10_000_000  # libvips' largest image width or height


def to_srgb(frame: pyvips.Image) -> pyvips.Image:
    """ICC profiles, CMYK, 16-bit and greyscale all become 8-bit sRGB (alpha kept)."""
    if frame.get_typeof("icc-profile-data") != 0:
        frame = frame.icc_transform("srgb", embedded=True, intent="perceptual")
    if frame.interpretation != "srgb" or frame.format != "uchar":
        frame = frame.colourspace("srgb")
    if frame.format != "uchar":
        frame = frame.cast("uchar")
    return frame


def orient(frame: pyvips.Image) -> pyvips.Image:
    return frame.autorot()


def trim(frame: pyvips.Image, spec: Trim | None, scale: float = 1.0) -> pyvips.Image:
    """Cut pixels (given at full size; ``scale`` is the decoded size over the full size)."""
    if spec is None:
        return frame
    if spec.border:
        left, top, width, height = frame.find_trim(threshold=10)
        if width == 0 or height == 0:
            return frame
        return frame.crop(left, top, width, height)
    full = (round(frame.width / scale), round(frame.height / scale))
    top_px, right_px, bottom_px, left_px = spec.sides(*full)
    left, top = round(left_px * scale), round(top_px * scale)
    width = frame.width - left - round(right_px * scale)
    height = frame.height - top - round(bottom_px * scale)
    if width < 1 or height < 1:
        return frame  # refused before decoding by the pipeline's size check
    return frame.crop(left, top, width, height)


def rotate_flip(frame: pyvips.Image, options: Options) -> pyvips.Image:
    if options.rotate:
        frame = frame.rot(f"d{options.rotate}")
    if options.flip in ("h", "hv"):
        frame = frame.fliphor()
    if options.flip in ("v", "hv"):
        frame = frame.flipver()
    return frame


def inference_array(frame: pyvips.Image, size: Size) -> RGBImage:
    """The RGB uint8 copy of exactly ``size`` that the face detector sees."""
    if frame.hasalpha():
        frame = frame.flatten(background=[255, 255, 255])
    if (frame.width, frame.height) != (size.width, size.height):
        frame = frame.thumbnail_image(size.width, height=size.height, size="force")
    frame = frame.cast("uchar")
    array = np.ndarray(
        buffer=frame.write_to_memory(), dtype=np.uint8, shape=(size.height, size.width, frame.bands)
    )
    return np.ascontiguousarray(array[:, :, :3])


def attention_point(frame: pyvips.Image, crop: Size) -> tuple[float, float]:
    """The saliency point (libvips smartcrop 'attention') for a crop of ``crop`` pixels."""
    scale = min(1.0, 512 / max(frame.width, frame.height))
    small = frame.resize(scale) if scale < 1 else frame
    width = max(1, min(small.width, round(crop.width * scale)))
    height = max(1, min(small.height, round(crop.height * scale)))
    _, found = small.smartcrop(
        width, height, interesting="attention", attention_x=True, attention_y=True
    )
    return found["attention_x"] / scale, found["attention_y"] / scale


def crop_box(
    frame_width: int, frame_height: int, plan: Plan, loaded_scale: float
) -> tuple[int, int, int, int]:
    """The planned crop (left, top, width, height) scaled to the decoded frame, inside it."""
    crop = plan.crop
    left = min(frame_width - 1, int(crop.left * loaded_scale))
    top = min(frame_height - 1, int(crop.top * loaded_scale))
    width = max(1, min(frame_width - left, round(crop.width * loaded_scale)))
    height = max(1, min(frame_height - top, round(crop.height * loaded_scale)))
    return left, top, width, height


def crop_resize(frame: pyvips.Image, plan: Plan, loaded_scale: float) -> pyvips.Image:
    """Cut the planned region (scaled to the decoded size) and resize it to the planned size."""
    left, top, width, height = crop_box(frame.width, frame.height, plan, loaded_scale)
    if (left, top, width, height) != (0, 0, frame.width, frame.height):
        frame = frame.crop(left, top, width, height)
    target = plan.resize
    if (width, height) != (target.width, target.height):
        frame = frame.resize(target.width / width, vscale=target.height / height, kernel="lanczos3")
        if (frame.width, frame.height) != (target.width, target.height):
            frame = frame.gravity("centre", target.width, target.height, extend="copy")
    return frame


def pad(frame: pyvips.Image, plan: Plan, background: RGBA | None) -> pyvips.Image:
    canvas = plan.canvas
    if (canvas.width, canvas.height) == (frame.width, frame.height):
        return frame
    colour = background or (255, 255, 255, 255)
    if colour[3] < 255 and not frame.hasalpha():
        frame = frame.bandjoin(255)
    fill = list(colour) if frame.hasalpha() else list(colour[:3])
    left, top = plan.offset
    return frame.embed(left, top, canvas.width, canvas.height, extend="background", background=fill)


REDACT_MARGIN = 0.2  # each side of a face box grows by this share of the box before it is hidden


def redact(
    frame: pyvips.Image,
    boxes: list[Box],
    style: RedactStyle,
    strength: int,
    rows: tuple[int, int] | None = None,
) -> pyvips.Image:
    """Blur or pixelate each box (grown by REDACT_MARGIN, kept inside ``rows`` of the frame,
    default all): the blur radius or the block is ``strength`` hundredths of half the box's
    longer side, so a face is unrecognisable at any output size."""
    top_limit, bottom_limit = rows if rows is not None else (0, frame.height)
    for box in boxes:
        grow_x, grow_y = box.width * REDACT_MARGIN, box.height * REDACT_MARGIN
        left = max(0, math.floor(box.left - grow_x))
        top = max(top_limit, math.floor(box.top - grow_y))
        right = min(frame.width, math.ceil(box.right + grow_x))
        bottom = min(bottom_limit, math.ceil(box.bottom + grow_y))
        if right - left < 1 or bottom - top < 1:
            continue
        region = frame.crop(left, top, right - left, bottom - top)
        size = max(box.width, box.height) / 2 * strength / 100
        frame = frame.insert(_hidden(region, style, size), left, top)
    return frame


def _hidden(region: pyvips.Image, style: RedactStyle, size: float) -> pyvips.Image:
    if style is RedactStyle.PIXELATE:
        block = max(2, round(size))
        small = region.shrink(min(block, region.width), min(block, region.height))
        big = small.zoom(
            math.ceil(region.width / small.width), math.ceil(region.height / small.height)
        )
        return big.crop(0, 0, region.width, region.height)
    return region.gaussblur(max(2.0, size / 2), precision="integer").cast(region.format)


def redact_strip(
    strip: pyvips.Image,
    count: int,
    boxes: list[list[Box]],
    style: RedactStyle,
    strength: int,
) -> pyvips.Image:
    """:func:`redact` of every frame of a strip, each frame with its own boxes (frame coords)."""
    height = strip.height // count
    for index, frame_boxes in enumerate(boxes):
        top = index * height
        moved = [Box(b.left, b.top + top, b.right, b.bottom + top) for b in frame_boxes]
        strip = redact(strip, moved, style, strength, rows=(top, top + height))
    return strip


def border_sides(spec: Border | None, dpr: float) -> tuple[int, int, int, int]:
    """(top, right, bottom, left) of the border in output pixels (``dpr`` applied)."""
    if spec is None:
        return 0, 0, 0, 0
    sides = (spec.top, spec.right, spec.bottom, spec.left)
    top, right, bottom, left = (round(value * dpr) for value in sides)
    return top, right, bottom, left


def border(frame: pyvips.Image, spec: Border | None, dpr: float) -> pyvips.Image:
    """The frame inside a border of ``spec.colour`` (added after resizing, like Cloudflare)."""
    top, right, bottom, left = border_sides(spec, dpr)
    if spec is None or top + right + bottom + left == 0:
        return frame
    colour = spec.colour
    if colour[3] < 255 and not frame.hasalpha():
        frame = frame.bandjoin(255)
    fill = list(colour) if frame.hasalpha() else list(colour[:3])
    return frame.embed(
        left,
        top,
        frame.width + left + right,
        frame.height + top + bottom,
        extend="background",
        background=fill,
    )


def adjust(frame: pyvips.Image, options: Options) -> pyvips.Image:
    """Brightness, contrast, gamma and saturation, on the colour bands only."""
    if (options.brightness, options.contrast, options.gamma, options.saturation) == (1, 1, 1, 1):
        return frame
    alpha = frame[frame.bands - 1] if frame.hasalpha() else None
    colour = frame.extract_band(0, n=3) if alpha is not None else frame
    if options.saturation != 1:
        lch = colour.colourspace("lch")
        lch = lch * [1, options.saturation, 1]
        colour = lch.colourspace("srgb")
    if options.brightness != 1:
        colour = colour * options.brightness
    if options.contrast != 1:
        colour = (colour - 128) * options.contrast + 128
    if options.gamma != 1:
        colour = (colour / 255) ** (1 / options.gamma) * 255
    colour = colour.cast("uchar")
    return colour.bandjoin(alpha) if alpha is not None else colour


def blur(frame: pyvips.Image, sigma: float) -> pyvips.Image:
    return frame.gaussblur(sigma / 2) if sigma > 0 else frame


def sharpen(frame: pyvips.Image, amount: float) -> pyvips.Image:
    return frame.sharpen(sigma=0.5 + amount / 10, m2=amount) if amount > 0 else frame


def flatten(frame: pyvips.Image, background: RGBA | None, keep_alpha: bool) -> pyvips.Image:
    """Remove alpha onto the background where the output format cannot keep it."""
    if not frame.hasalpha() or keep_alpha:
        return frame
    colour = background or (255, 255, 255, 255)
    return frame.flatten(background=list(colour[:3]))


def frames_of(strip: pyvips.Image, count: int) -> list[pyvips.Image]:
    height = strip.height // count
    return [strip.crop(0, i * height, strip.width, height) for i in range(count)]


def stack(frames: list[pyvips.Image], *, side_by_side: bool = False) -> pyvips.Image:
    """The frames stacked top to bottom (a strip), or laid side by side."""
    if len(frames) == 1:
        return frames[0]
    return pyvips.Image.arrayjoin(frames, across=len(frames) if side_by_side else 1)


def unstack(row: pyvips.Image, count: int) -> pyvips.Image:
    """Frames laid side by side, stacked top to bottom instead."""
    width = row.width // count
    return stack([row.crop(i * width, 0, width, row.height) for i in range(count)])


def each(
    strip: pyvips.Image, count: int, step: Callable[[pyvips.Image], pyvips.Image]
) -> pyvips.Image:
    """``step`` run on every frame of the strip on its own (for steps that read neighbours)."""
    return stack([step(frame) for frame in frames_of(strip, count)])


def crop_resize_strip(
    strip: pyvips.Image, count: int, plan: Plan, loaded_scale: float
) -> pyvips.Image:
    """:func:`crop_resize` of every frame: y resized side by side, then x resized stacked."""
    frame_height = strip.height // count
    left, top, width, height = crop_box(strip.width, frame_height, plan, loaded_scale)
    target = plan.resize
    upsizing = target.width > width or target.height > height  # resamples both axes at once
    # from 4x down along y libvips block-shrinks first, through a cache of whole rows (as wide
    # as all the frames side by side): measured slower than frame by frame there
    if upsizing or target.height * 4 <= height or width * count > MAX_COORD:
        return each(strip, count, lambda frame: crop_resize(frame, plan, loaded_scale))
    frames = frames_of(strip, count)
    if (left, top, width, height) != (0, 0, strip.width, frame_height):
        frames = [frame.crop(left, top, width, height) for frame in frames]
    if height == target.height:
        strip = stack(frames)
    else:
        row = stack(frames, side_by_side=True)
        row = row.resize(1.0, vscale=target.height / height, kernel="lanczos3")
        if row.height != target.height:
            row = row.gravity("centre", row.width, target.height, extend="copy")
        strip = unstack(row, count)
    if width != target.width:
        strip = strip.resize(target.width / width, vscale=1.0, kernel="lanczos3")
        if strip.width != target.width:
            strip = strip.gravity("centre", target.width, strip.height, extend="copy")
    return strip


def pad_strip(strip: pyvips.Image, count: int, plan: Plan, background: RGBA | None) -> pyvips.Image:
    """:func:`pad` of every frame: x padded on the strip, y padded frame by frame."""
    canvas = plan.canvas
    frame_height = strip.height // count
    if (canvas.width, canvas.height) == (strip.width, frame_height):
        return strip
    colour = background or (255, 255, 255, 255)
    if colour[3] < 255 and not strip.hasalpha():
        strip = strip.bandjoin(255)
    fill = list(colour) if strip.hasalpha() else list(colour[:3])
    left, top = plan.offset
    if (left, canvas.width) != (0, strip.width):
        strip = strip.embed(
            left, 0, canvas.width, strip.height, extend="background", background=fill
        )
    if (top, canvas.height) != (0, frame_height):
        strip = each(
            strip,
            count,
            lambda frame: frame.embed(
                0, top, frame.width, canvas.height, extend="background", background=fill
            ),
        )
    return strip
