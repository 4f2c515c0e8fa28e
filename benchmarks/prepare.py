"""Benchmark inputs, made from the bundled demo images (src/focal/demo) into benchmarks/work/inputs.

    large/    four photos scaled up to 2400 px on the long side, with mild grain (JPEG q90)
    face/     portraits and group photos (two to four demo portraits side by side), JPEG q90
    alpha/    PNGs with an alpha channel (a soft-edged astronaut, the logo scaled up)
    anim/     an animated GIF (24 frames panning across the astronaut)
    portrait_2048.jpg   a 2048 x 2048 JPEG portrait (the face-crop cost breakdown)

The evaluation photos of ../shared/facedata are read in place by the benchmarks that use them and
never copied here. Running this again only rebuilds what is missing (``--force`` rebuilds all).

    .venv/bin/python benchmarks/prepare.py [--force]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pyvips

import harness

GRAIN_SIGMA = 4.0
LARGE_SIDE = 2400


def _demo(name: str) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(harness.DEMO / name))


def _grain(image: pyvips.Image, seed: int) -> pyvips.Image:
    """Mild sensor-like noise, so scaled-up photos compress and decode like real ones."""
    noise = pyvips.Image.gaussnoise(image.width, image.height, sigma=GRAIN_SIGMA, mean=0, seed=seed)
    return (image + noise).cast("uchar")


def _scale_to(image: pyvips.Image, long_side: int) -> pyvips.Image:
    return image.resize(long_side / max(image.width, image.height), kernel="lanczos3")


def large(name: str, seed: int) -> pyvips.Image:
    return _grain(_scale_to(_demo(name), LARGE_SIDE), seed)


def portrait(name: str, side: int, seed: int) -> pyvips.Image:
    """A square portrait of ``side`` pixels, cut from the top of the scaled demo portrait."""
    image = _demo(name)
    scaled = image.resize(side / image.width, kernel="lanczos3")
    return _grain(scaled.crop(0, 0, side, min(side, scaled.height)), seed)


def group(names: Sequence[str], height: int, seed: int) -> pyvips.Image:
    """Portraits side by side, each scaled to ``height``, with a small gap."""
    tiles = []
    for name in names:
        image = _demo(name)
        tiles.append(image.resize(height / image.height, kernel="lanczos3"))
    row = pyvips.Image.arrayjoin(tiles, across=len(tiles), shim=24, background=[40, 40, 40])
    return _grain(row, seed)


def soft_alpha(name: str, side: int) -> pyvips.Image:
    """The demo photo scaled to ``side`` with a radial alpha fading to transparent at the edges."""
    image = _scale_to(_demo(name), side)
    xy = pyvips.Image.xyz(image.width, image.height)
    cx, cy = image.width / 2, image.height / 2
    distance = ((xy[0] - cx) ** 2 + (xy[1] - cy) ** 2) ** 0.5
    alpha = (255 * (1 - distance / (min(cx, cy) * 1.05))).cast("uchar")
    return image.bandjoin(alpha)


def logo(scale: float) -> pyvips.Image:
    return _demo("logo.png").resize(scale, kernel="lanczos3")


def animation(frames: int, side: int) -> pyvips.Image:
    """A pan across the astronaut: ``frames`` frames of ``side`` pixels, as one tall image."""
    source = _scale_to(_demo("astronaut.jpg"), side * 2)
    step = (source.width - side) / max(1, frames - 1)
    pages = [source.crop(round(i * step), side // 2, side, side) for i in range(frames)]
    strip = pyvips.Image.arrayjoin(pages, across=1)
    strip = strip.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", side)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [80] * frames)
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    return strip


def targets() -> dict[str, Callable[[Path], None]]:
    """Every input: path under inputs/ -> how to write it."""

    def jpeg(make: Callable[[], pyvips.Image]) -> Callable[[Path], None]:
        return lambda path: make().jpegsave(str(path), Q=90, optimize_coding=True, strip=True)

    def png(make: Callable[[], pyvips.Image]) -> Callable[[Path], None]:
        return lambda path: make().pngsave(str(path), compression=6)

    def gif(make: Callable[[], pyvips.Image]) -> Callable[[Path], None]:
        return lambda path: make().gifsave(str(path))

    return {
        "large/coffee.jpg": jpeg(lambda: large("coffee.jpg", 1)),
        "large/chelsea.jpg": jpeg(lambda: large("chelsea.jpg", 2)),
        "large/astronaut.jpg": jpeg(lambda: large("astronaut.jpg", 3)),
        "large/grace_hopper.jpg": jpeg(lambda: large("grace_hopper.jpg", 4)),
        "face/astronaut_1536.jpg": jpeg(lambda: portrait("astronaut.jpg", 1536, 5)),
        "face/grace_hopper_1536.jpg": jpeg(lambda: portrait("grace_hopper.jpg", 1536, 6)),
        "face/group_two.jpg": jpeg(lambda: group(["astronaut.jpg", "grace_hopper.jpg"], 1000, 7)),
        "face/group_four.jpg": jpeg(
            lambda: group(
                ["grace_hopper.jpg", "astronaut.jpg", "grace_hopper.jpg", "astronaut.jpg"], 700, 8
            )
        ),
        "alpha/astronaut_soft.png": png(lambda: soft_alpha("astronaut.jpg", 1200)),
        "alpha/logo_large.png": png(lambda: logo(3.0)),
        "anim/astronaut_pan.gif": gif(lambda: animation(24, 320)),
        "portrait_2048.jpg": jpeg(lambda: portrait("grace_hopper.jpg", 2048, 9)),
    }


def prepare(force: bool = False) -> list[Path]:
    made = []
    for relative, write in targets().items():
        path = harness.INPUTS / relative
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        made.append(path)
    return made


def inputs(folder: str) -> list[str]:
    """Paths (relative to inputs/) of one folder's inputs, sorted."""
    return sorted(r for r in targets() if r.startswith(folder + "/"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make the benchmark inputs.")
    parser.add_argument("--force", action="store_true", help="rebuild every input")
    args = parser.parse_args(argv)
    made = prepare(args.force)
    for path in made:
        image = pyvips.Image.new_from_file(str(path))
        print(
            f"  {path.relative_to(harness.ROOT)}: {image.width}x{image.get('height')}, "
            f"{path.stat().st_size // 1024} KiB"
        )
    print(f"{len(made)} inputs made, {len(targets()) - len(made)} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
