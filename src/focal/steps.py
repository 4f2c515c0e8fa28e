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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyvips

from focal import geometry
from focal.detection import RGBImage
from focal.geometry import Box, Plan, Size
from focal.options import RGBA, Border, Composite, Options, Overlay, RedactStyle, Repeat, Trim

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
        return trim_border(frame, spec)
    full = (round(frame.width / scale), round(frame.height / scale))
    top_px, right_px, bottom_px, left_px = spec.sides(*full)
    left, top = round(left_px * scale), round(top_px * scale)
    width = frame.width - left - round(right_px * scale)
    height = frame.height - top - round(bottom_px * scale)
    if width < 1 or height < 1:
        return frame  # refused before decoding by the pipeline's size check
    return frame.crop(left, top, width, height)


def trim_border(frame: pyvips.Image, spec: Trim) -> pyvips.Image:
    """The frame without its border (:func:`border_box`)."""
    left, top, width, height = border_box(frame, spec)
    if (width, height) == (frame.width, frame.height):
        return frame
    return frame.crop(left, top, width, height)


def border_box(frame: pyvips.Image, spec: Trim) -> tuple[int, int, int, int]:
    """(left, top, width, height) inside the border of ``spec.border_colour`` (else the top-left
    pixel's colour), a pixel counting as border while it differs from it by at most
    255 - tolerance, with ``border_keep`` pixels of the border left on each side; the whole
    frame when it is all border."""
    colour = spec.border_colour or tuple(int(v) for v in frame(0, 0))
    background = [float(v) for v in colour[: min(3, frame.bands)]]
    threshold = 255 - spec.border_tolerance
    left, top, width, height = frame.find_trim(threshold=threshold, background=background)
    if width == 0 or height == 0:
        return 0, 0, frame.width, frame.height
    keep = spec.border_keep
    right = min(frame.width, left + width + keep)
    bottom = min(frame.height, top + height + keep)
    left, top = max(0, left - keep), max(0, top - keep)
    return left, top, right - left, bottom - top


def rotate_flip(frame: pyvips.Image, options: Options) -> pyvips.Image:
    """Flip, then rotate (Cloudflare's order: flip=h,rotate=90 mirrors, then turns)."""
    if options.flip in ("h", "hv"):
        frame = frame.fliphor()
    if options.flip in ("v", "hv"):
        frame = frame.flipver()
    if options.rotate:
        frame = frame.rot(f"d{options.rotate}")
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


# --- draw: overlays ------------------------------------------------------------------------------

# Cloudflare's composite names -> libvips' blend modes (lighter adds the colours: libvips' add)
BLEND_MODES = {
    Composite.OVER: "over",
    Composite.IN: "in",
    Composite.ATOP: "atop",
    Composite.OUT: "out",
    Composite.XOR: "xor",
    Composite.LIGHTER: "add",
    Composite.MULTIPLY: "multiply",
    Composite.SCREEN: "screen",
    Composite.OVERLAY: "overlay",
    Composite.DARKEN: "darken",
    Composite.LIGHTEN: "lighten",
    Composite.DIFFERENCE: "difference",
}
# the modes that can leave the image under the overlay transparent (an opaque image gains alpha)
CLEARING = frozenset({Composite.IN, Composite.OUT, Composite.XOR})
MEMORY_PIXELS = 4_000_000  # a prepared overlay this small is kept in memory for every frame


@dataclass(frozen=True)
class Layer:
    """An overlay ready to composite: its pixels (RGBA, repeated where it tiles) and where its
    top-left corner lies on the output (may be outside it: only the overlap is drawn)."""

    image: pyvips.Image
    left: int
    top: int
    composite: Composite


def overlay_side(value: float | None, base: int, dpr: float) -> int | None:
    """An overlay's width or height in output pixels: a fraction (below 1) of the output's side,
    or pixels times dpr."""
    if value is None:
        return None
    if value < 1:
        return max(1, round(value * base))
    return max(1, round(value * dpr))


def prepare_overlay(image: pyvips.Image, spec: Overlay, base: Size, dpr: float) -> pyvips.Image:
    """The overlay as drawn: oriented, sRGB with alpha, rotated, fitted to its width/height by
    its fit and gravity (:func:`focal.geometry.plan`, as the image itself), on its background,
    its alpha times its opacity."""
    image = to_srgb(orient(image))
    if not image.hasalpha():
        image = image.bandjoin(255)
    if spec.rotate:
        image = image.rot(f"d{spec.rotate}")
    width = overlay_side(spec.width, base.width, dpr)
    height = overlay_side(spec.height, base.height, dpr)
    plan = geometry.plan(Size(image.width, image.height), width, height, spec.fit, spec.gravity)
    image = crop_resize(image, plan, 1.0)
    canvas = plan.canvas
    if (canvas.width, canvas.height) != (image.width, image.height):
        left, top = plan.offset
        image = image.embed(
            left, top, canvas.width, canvas.height, extend="background", background=[0, 0, 0, 0]
        )
    if spec.background is not None:
        under = (image.new_from_image(list(spec.background))).copy(interpretation="srgb")
        image = under.composite2(image, "over").cast("uchar")
    if spec.opacity < 1:
        alpha = (image[3] * spec.opacity).cast("uchar")
        image = image.extract_band(0, n=3).bandjoin(alpha)
    if image.width * image.height <= MEMORY_PIXELS:
        image = image.copy_memory()
    return image


def _start(near: int | None, far: int | None, size: int, limit: int, dpr: float) -> int:
    """Where an overlay of ``size`` starts on an axis of ``limit``: ``near`` pixels from the
    start, ``far`` pixels from the end, else centred."""
    if near is not None:
        return round(near * dpr)
    if far is not None:
        return limit - size - round(far * dpr)
    return (limit - size) // 2


def _tiles(start: int, size: int, limit: int) -> tuple[int, int]:
    """(first tile's start at or before 0, tiles) for tiles of ``size`` through ``start`` that
    cover 0..limit."""
    first = start - math.ceil(start / size) * size
    return first, math.ceil((limit - first) / size)


def place_overlay(image: pyvips.Image, spec: Overlay, base: Size, dpr: float) -> Layer:
    """The prepared overlay placed by its offsets (centred on an axis without one) and repeated
    along x, y or both with ``repeat`` (the tiles pass through that place)."""
    left = _start(spec.left, spec.right, image.width, base.width, dpr)
    top = _start(spec.top, spec.bottom, image.height, base.height, dpr)
    across, down = 1, 1
    if spec.repeat in (Repeat.BOTH, Repeat.X):
        left, across = _tiles(left, image.width, base.width)
    if spec.repeat in (Repeat.BOTH, Repeat.Y):
        top, down = _tiles(top, image.height, base.height)
    if (across, down) != (1, 1):
        image = image.replicate(across, down)
    return Layer(image, left, top, spec.composite)


def overlay_layers(
    overlays: Sequence[tuple[Overlay, pyvips.Image]], base: Size, dpr: float
) -> list[Layer]:
    """Every overlay prepared and placed for an output of ``base`` (the same for every frame)."""
    return [
        place_overlay(prepare_overlay(image, spec, base, dpr), spec, base, dpr)
        for spec, image in overlays
    ]


def draw(frame: pyvips.Image, layers: Sequence[Layer]) -> pyvips.Image:
    """The layers composited over the frame in order, each only within its own box: outside an
    overlay the frame is never changed, whatever the composite mode (as Cloudflare does)."""
    for layer in layers:
        frame = _composite(frame, layer)
    return frame


def _composite(
    frame: pyvips.Image, layer: Layer, rows: tuple[int, int] | None = None
) -> pyvips.Image:
    """One layer drawn, only inside ``rows`` of the frame (default all)."""
    top_limit, bottom_limit = rows if rows is not None else (0, frame.height)
    left, top = max(0, layer.left), max(top_limit, layer.top)
    right = min(frame.width, layer.left + layer.image.width)
    bottom = min(bottom_limit, layer.top + layer.image.height)
    if right <= left or bottom <= top:
        return frame
    width, height = right - left, bottom - top
    piece = layer.image.crop(left - layer.left, top - layer.top, width, height)
    region = frame.crop(left, top, width, height)
    opaque = not frame.hasalpha()
    if opaque:
        region = region.bandjoin(255)
    mode = BLEND_MODES[layer.composite]
    drawn = region.composite2(piece, mode, compositing_space="srgb").cast("uchar")
    if opaque and layer.composite not in CLEARING:
        drawn = drawn.extract_band(0, n=3)
    elif opaque:
        frame = frame.bandjoin(255)
    return frame.insert(drawn, left, top)


def draw_strip(strip: pyvips.Image, count: int, layers: Sequence[Layer]) -> pyvips.Image:
    """:func:`draw` on every frame of a strip, in place on the strip (each layer moved down to
    its frame and kept inside that frame's rows)."""
    height = strip.height // count
    for index in range(count):
        top = index * height
        for layer in layers:
            moved = Layer(layer.image, layer.left, layer.top + top, layer.composite)
            strip = _composite(strip, moved, rows=(top, top + height))
    return strip
