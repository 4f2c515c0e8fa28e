"""Reading sources with libvips: sniff and check the header first, then decode.

Nothing here touches pixels until :func:`check` has accepted the header, so a decompression bomb
(a small file whose header claims a huge image) is refused without allocating it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from focal.errors import ImageError, LimitError

# libvips loaders accepted from untrusted sources, and the format name each one means.
LOADERS = {
    "VipsForeignLoadJpegBuffer": "jpeg",
    "VipsForeignLoadPngBuffer": "png",
    "VipsForeignLoadWebpBuffer": "webp",
    "VipsForeignLoadNsgifBuffer": "gif",
    "VipsForeignLoadHeifBuffer": "avif",
    "VipsForeignLoadTiffBuffer": "tiff",
}
ANIMATED = ("gif", "webp")
MIME = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "tiff": "image/tiff",
}


@dataclass(frozen=True)
class Header:
    format: str  # jpeg, png, webp, gif, avif, tiff
    width: int  # one frame, as stored (before EXIF orientation)
    height: int
    frames: int
    orientation: int  # EXIF orientation 1..8
    has_alpha: bool
    bytes: int

    @property
    def swaps_sides(self) -> bool:
        return self.orientation in (5, 6, 7, 8)

    @property
    def oriented_size(self) -> tuple[int, int]:
        if self.swaps_sides:
            return self.height, self.width
        return self.width, self.height


def find_loader(data: bytes) -> str | None:
    """The name of the libvips loader that recognises these bytes, from their content alone."""
    pointer = pyvips.vips_lib.vips_foreign_find_load_buffer(pyvips.ffi.from_buffer(data), len(data))
    if pointer == pyvips.ffi.NULL:
        return None
    return str(pyvips.ffi.string(pointer).decode())


def from_memory(data: bytes, **options: object) -> pyvips.Image:
    """An image (lazily decoded) over ``data`` itself. ``new_from_buffer`` would first copy the
    whole file into memory of libvips' own, holding the GIL while it does (the copy and its page
    faults were the largest share of the GIL time of a resize); a memory source reads ``data``
    in place and keeps it alive as long as the image."""
    return pyvips.Image.new_from_source(pyvips.Source.new_from_memory(data), "", **options)


def read_header(data: bytes) -> Header:
    """Sniff the format from the bytes (never from a name) and read the header only."""
    if not data:
        raise ImageError("The source is empty (0 bytes): expected an image")
    loader = find_loader(data)
    if loader is None:
        raise ImageError("The source is not an image: expected JPEG, PNG, WebP, GIF, AVIF or TIFF")
    fmt = LOADERS.get(loader)
    if fmt is None:
        kind = loader.removeprefix("VipsForeignLoad").removesuffix("Buffer").lower()
        raise ImageError(
            f"The source is a {kind} file: expected JPEG, PNG, WebP, GIF, AVIF or TIFF"
        )
    try:
        image = from_memory(data, access="sequential")
    except pyvips.Error as error:
        raise ImageError(
            "The source image header could not be read: the file is truncated or corrupt",
            detail=str(error),
        ) from None
    fields = set(image.get_fields())
    frames = image.get("n-pages") if "n-pages" in fields else 1
    page_height = image.get("page-height") if "page-height" in fields else image.height
    orientation = image.get("orientation") if "orientation" in fields else 1
    return Header(
        format=fmt,
        width=image.width,
        height=page_height,
        frames=max(1, int(frames)),
        orientation=int(orientation) if 1 <= int(orientation) <= 8 else 1,
        has_alpha=image.hasalpha(),
        bytes=len(data),
    )


def check(header: Header, *, max_pixels: int, max_frames: int) -> None:
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise LimitError(
            f"The source is {header.width}x{header.height} ({pixels / 1e6:.1f} megapixels): "
            f"expected at most {max_pixels / 1e6:g} megapixels"
        )
    if header.frames > max_frames:
        raise LimitError(f"The source has {header.frames} frames: expected at most {max_frames}")


def load(
    data: bytes, header: Header, *, animated: bool, shrink: int = 1, fail_on: str = "truncated"
) -> pyvips.Image:
    """Decode (lazily) with shrink-on-load where the format has it. ``fail_on`` is libvips'
    level of damage that makes the decode fail: none, truncated, error or warning."""
    options: dict[str, object] = {"fail_on": fail_on}
    if header.format in ANIMATED:
        options["n"] = -1 if animated else 1
    if header.format == "jpeg" and shrink > 1:
        options["shrink"] = shrink
    return from_memory(data, **options)


def jpeg_shrink(scale: float) -> int:
    """The largest JPEG shrink-on-load factor (1, 2, 4, 8) keeping at least ``scale`` x pixels."""
    factor = 1
    while factor < 8 and scale * factor * 2 <= 1.0:
        factor *= 2
    return factor
