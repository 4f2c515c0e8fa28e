"""Test images made at test time from the bundled demo pictures (public domain)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pyvips

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"


def demo(name: str) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(DEMO / name))


def exif_rotated_jpeg() -> bytes:
    """coffee.jpg (600x400) stored turned a quarter left, with EXIF orientation 6 (turn right)."""
    stored = demo("coffee.jpg").rot270().copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
    return bytes(stored.jpegsave_buffer(Q=95, keep="exif"))


def cmyk_jpeg() -> bytes:
    return bytes(demo("astronaut.jpg").colourspace("cmyk").jpegsave_buffer(Q=95))


def png16() -> bytes:
    return bytes(demo("astronaut.jpg").colourspace("rgb16").pngsave_buffer())


def grey_png() -> bytes:
    return bytes(demo("astronaut.jpg").colourspace("b-w").pngsave_buffer())


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def animated_gif(width: int = 120, height: int = 80) -> bytes:
    """Five frames, each one flat colour, with a black square in the top-left corner."""
    frames = []
    for colour in COLOURS:
        frame = (pyvips.Image.black(width, height) + list(colour)).cast("uchar")
        frame = frame.draw_rect([0, 0, 0], 0, 0, 20, 20, fill=True)
        frames.append(frame.copy(interpretation="srgb"))
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * len(frames))
    return bytes(strip.gifsave_buffer())


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """astronaut.jpg cut in half: it decodes, its lower part grey."""
    data = (DEMO / "astronaut.jpg").read_bytes()
    return data[: len(data) // 2]


def header_only_jpeg() -> bytes:
    """astronaut.jpg cut before its first scan: nothing in it decodes."""
    data = (DEMO / "astronaut.jpg").read_bytes()
    return data[: data.find(b"\xff\xda") - 10]


def mean_difference(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean absolute difference per channel value (0..255) of two same-size images."""
    a = a.extract_band(0, n=3) if a.bands > 3 else a
    b = b.extract_band(0, n=3) if b.bands > 3 else b
    return float((a.cast("float") - b.cast("float")).abs().avg())
