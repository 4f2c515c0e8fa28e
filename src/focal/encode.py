"""Choosing the output format (with Accept negotiation) and encoding frames."""

from __future__ import annotations

import pyvips

from focal.accept import negotiable_formats
from focal.decode import MIME, Header
from focal.errors import expected
from focal.options import Format, Metadata, Options

KEEPS_ALPHA = {"png", "webp", "avif", "gif"}
ANIMATES = {"gif", "webp"}


def choose_format(
    options: Options, header: Header, accept: str | None, animated: bool
) -> tuple[str, bool]:
    """(output format, whether it was negotiated from Accept)."""
    asked = options.format
    if asked is Format.AUTO and options.compression == "fast":  # the quickest to encode
        return _fallback(header, animated), False
    if asked is Format.AUTO:
        for fmt in negotiable_formats(accept):
            if fmt in ANIMATES or not animated:
                return fmt, True
        return _fallback(header, animated), True
    if asked is None or asked is Format.JSON:
        return _same_as_source(header, animated), False
    if asked is Format.BASELINE_JPEG:
        return "baseline-jpeg", False
    return asked.value, False


def _same_as_source(header: Header, animated: bool) -> str:
    if header.format in ("jpeg", "png", "webp", "avif", "gif"):
        return header.format
    return _fallback(header, animated)


def _fallback(header: Header, animated: bool) -> str:
    if animated:
        return "gif"
    return "png" if header.has_alpha else "jpeg"


def content_type(fmt: str) -> str:
    return "image/jpeg" if fmt == "baseline-jpeg" else MIME[fmt]


def _metadata(image: pyvips.Image, mode: Metadata) -> tuple[pyvips.Image, str]:
    """The image with only the metadata to keep, and libvips' ``keep`` flags for the saver."""
    if mode is Metadata.KEEP:
        return image, "exif,xmp,iptc,icc"
    if mode is Metadata.NONE:
        return image, "none"
    copyright_text = None
    if image.get_typeof("exif-ifd0-Copyright") != 0:
        raw = str(image.get("exif-ifd0-Copyright"))
        copyright_text = raw.split(" (", 1)[0].strip()
    image = image.copy()
    for name in image.get_fields():
        if name.startswith("exif-") or name in ("xmp-data", "iptc-data", "icc-profile-data"):
            image.remove(name)
    if not copyright_text:
        return image, "none"
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Copyright", copyright_text)
    return image, "exif"


def encode(image: pyvips.Image, fmt: str, options: Options) -> bytes:
    image, keep = _metadata(image, options.metadata)
    quality = options.quality
    fast = options.compression == "fast"
    if fmt in ("jpeg", "baseline-jpeg"):
        data: bytes = image.jpegsave_buffer(
            Q=quality, interlace=fmt == "jpeg" and not fast, optimize_coding=not fast, keep=keep
        )
    elif fmt == "png":
        data = image.pngsave_buffer(compression=1 if fast else 6, keep=keep)
    elif fmt == "webp":
        data = image.webpsave_buffer(Q=quality, effort=2, keep=keep)
    elif fmt == "avif":
        data = image.heifsave_buffer(Q=quality, compression="av1", effort=2, keep=keep)
    elif fmt == "gif":
        data = image.gifsave_buffer(keep=keep)
    else:
        raise expected("format", "one of " + ", ".join(Format), fmt)
    return data
