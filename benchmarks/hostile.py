"""Hostile image files, made byte by byte: small files that claim or hold far more than they
look like. Used by benchmarks/experiments/attack.py (against a real server) and by the regression
tests.

Families:
- canvas bombs: animations of tiny frames on a huge canvas (GIF logical screen, WebP VP8X canvas),
  each frame composited at full canvas size when decoded;
- frame bombs: many frames (GIF, WebP, TIFF pages, APNG frames);
- header lies: a header that claims more pixels than the data holds (PNG, JPEG);
- truncations: valid files cut short.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pyvips


def _tiny_gif(frames: int) -> bytes:
    """A GIF of ``frames`` frames of 1x1 pixel (libvips' own encoder)."""
    rows = pyvips.Image.xyz(1, frames)[1] % 2  # alternate colours, so no frame repeats the last
    strip = (rows * 150 + [60, 30, 30]).cast("uchar").copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 1)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [40] * frames)
    return bytes(strip.gifsave_buffer())


def gif_screen_bomb(frames: int = 299, screen: int = 2000) -> bytes:
    """``frames`` frames of 1x1 on a ``screen`` x ``screen`` logical screen: each decoded frame is
    the whole screen, so a few kB become frames x screen^2 pixels."""
    data = bytearray(_tiny_gif(frames))
    assert data[:6] in (b"GIF89a", b"GIF87a")
    data[6:10] = struct.pack("<HH", screen, screen)
    return bytes(data)


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return kind + struct.pack("<I", len(body)) + body + pad


def _vp8l_1x1() -> bytes:
    """The VP8L chunk of a lossless 1x1 WebP (header and padding included)."""
    green = pyvips.Image.black(1, 1).new_from_image([30, 200, 30])
    image = green.cast("uchar").copy(interpretation="srgb")
    data = bytes(image.webpsave_buffer(lossless=True))
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    offset = 12
    while offset < len(data):
        kind = data[offset : offset + 4]
        size = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if kind == b"VP8L":
            return data[offset : offset + 8 + size + (size % 2)]
        offset += 8 + size + (size % 2)
    raise AssertionError("no VP8L chunk in libvips' lossless WebP")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def webp_canvas_bomb(frames: int = 100, canvas: int = 9000) -> bytes:
    """An animated WebP of ``frames`` frames of 1x1 on a ``canvas`` x ``canvas`` canvas."""
    frame = _vp8l_1x1()
    vp8x = bytes([0x02, 0, 0, 0]) + _u24(canvas - 1) + _u24(canvas - 1)  # animation flag
    anim = struct.pack("<IH", 0xFFFFFFFF, 0)
    body = b"WEBP" + _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"ANIM", anim)
    for _ in range(frames):
        header = _u24(0) + _u24(0) + _u24(0) + _u24(0) + _u24(40) + bytes([0x02])
        body += _riff_chunk(b"ANMF", header + frame)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_lie(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def apng_frame_bomb(frames: int = 1000, side: int = 4000) -> bytes:
    """An APNG that announces ``frames`` frames of ``side`` x ``side`` (acTL/fcTL chunks) with the
    default image highly compressed: a frame bomb for a decoder that plays APNG."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    raw = (b"\x00" + b"\x00" * side) * side
    idat = zlib.compress(raw, 9)
    actl = struct.pack(">II", frames, 0)
    chunks = [_png_chunk(b"IHDR", header), _png_chunk(b"acTL", actl)]
    fctl = struct.pack(">IIIIIHHBB", 0, side, side, 0, 0, 1, 25, 0, 0)
    chunks += [_png_chunk(b"fcTL", fctl), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def jpeg_scan_lie(claimed: int = 10000, real: int = 512) -> bytes:
    """A complete ``real`` x ``real`` JPEG whose frame header claims ``claimed`` x ``claimed``:
    its scan ends (with an end marker) long before the image its header describes."""
    noise = pyvips.Image.gaussnoise(real, real, sigma=40, mean=128)
    photo = noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb")
    data = bytearray(photo.jpegsave_buffer(Q=80, interlace=False))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", claimed, claimed)
    return bytes(data)


def jpeg_cut(claimed: int = 10000) -> bytes:
    """A ``claimed`` x ``claimed`` JPEG cut after its first few kB (no end marker)."""
    image = pyvips.Image.black(claimed, claimed).cast("uchar") + 128
    return bytes(image.jpegsave_buffer(Q=50, interlace=False))[:4000]


def tiff_pages(pages: int = 2000, side: int = 2000) -> bytes:
    """A multi-page TIFF of ``pages`` pages, each ``side`` x ``side`` of deflated zeros."""
    page = pyvips.Image.black(side, side * pages).cast("uchar")
    page = page.copy()
    page.set_type(pyvips.GValue.gint_type, "page-height", side)
    return bytes(page.tiffsave_buffer(compression="deflate"))


def flat_png(side: int = 7000) -> bytes:
    """A legitimate large still: ``side`` x ``side`` of one colour (1.4 MB for 49 megapixels)."""
    flat = pyvips.Image.black(side, side).new_from_image([40, 120, 200]).cast("uchar")
    return bytes(flat.copy(interpretation="srgb").pngsave_buffer(compression=1))


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: max(1, int(len(data) * fraction))]


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[], bytes]
    options: str  # the URL options it is requested with


def family() -> list[Hostile]:
    """Every hostile file the attack script sends, with the options it is requested with."""
    small_gif = _tiny_gif(5)
    return [
        Hostile("webp-canvas-100x9000.webp", lambda: webp_canvas_bomb(100, 9000), "width=64"),
        Hostile("webp-canvas-300x3000.webp", lambda: webp_canvas_bomb(300, 3000), "width=64"),
        Hostile("gif-screen-299x2000.gif", lambda: gif_screen_bomb(299, 2000), "width=64"),
        Hostile("gif-screen-30x2048.gif", lambda: gif_screen_bomb(30, 2048), "width=64"),
        Hostile("gif-at-budget-24x2000.gif", lambda: gif_screen_bomb(24, 2000), "width=64"),
        Hostile("png-49mp-at-budget.png", lambda: flat_png(7000), "width=3000,blur=2"),
        Hostile("gif-anim-false.gif", lambda: gif_screen_bomb(299, 2000), "width=64,anim=false"),
        Hostile("gif-to-jpeg.gif", lambda: gif_screen_bomb(299, 2000), "width=64,format=jpeg"),
        Hostile("apng-1000x4000.png", lambda: apng_frame_bomb(1000, 4000), "width=64"),
        Hostile("tiff-2000-pages.tiff", lambda: tiff_pages(400, 1000), "width=64"),
        Hostile("png-header-60000.png", lambda: png_header_lie(60000, 60000), "width=64"),
        Hostile("png-header-9000.png", lambda: png_header_lie(9000, 9000), "width=64"),
        Hostile("jpeg-scan-lie-10000.jpg", lambda: jpeg_scan_lie(10000, 512), "width=64"),
        Hostile("jpeg-cut-10000.jpg", lambda: jpeg_cut(10000), "width=64"),
        Hostile("gif-truncated.gif", lambda: truncated(small_gif, 0.6), "width=64"),
        Hostile(
            "webp-canvas-truncated.webp",
            lambda: truncated(webp_canvas_bomb(100, 9000), 0.5),
            "width=64",
        ),
        Hostile(
            "face-on-canvas-bomb.gif", lambda: gif_screen_bomb(299, 2000), "width=64,gravity=face"
        ),
    ]
