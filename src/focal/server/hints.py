"""Client hints: the request headers that ``width=auto`` and ``slow-connection-quality`` read.

``resolve`` turns the parsed options into the ones to render for this request, and names the
headers it read: they go into ``Vary``, and since the resolved options make the cache key, the
variants for different hints are kept apart.

width=auto: ``Sec-CH-Width`` (or the older ``Width``), the image's display width in device pixels;
else ``Sec-CH-Viewport-Width`` (or ``Viewport-Width``) times ``Sec-CH-DPR`` (or ``DPR``); else no
width (the original). The hinted width is rounded up to the next of a few breakpoints
(AUTO_WIDTHS): Cloudflare serves width=auto in one of four widths (320, 768, 960, 1200); focal
adds steps above 1200 for high-density screens, up to 3840, the widest it serves for width=auto.
So one URL makes at most len(AUTO_WIDTHS) variants per ``dpr``, not one per pixel of width.
``dpr`` in the URL still multiplies, so the breakpoint is divided by it. Under fit=scale-down,
which never enlarges, a width past the source's longer side gives the source's own size:
:func:`clamp_to_source` folds every such width into one, so identical outputs share one cache key
and one ETag.

slow-connection-quality: used instead of ``quality`` when ``Save-Data: on``, ``ECT`` is slow-2g,
2g or 3g, ``RTT`` is over 150 (ms) or ``Downlink`` is under 5 (Mbit/s), as Cloudflare does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from focal.decode import read_header
from focal.errors import FocalError
from focal.options import Fit, Options

WIDTH_HINTS: tuple[str, ...] = ("Sec-CH-Width", "Width", "Sec-CH-Viewport-Width")
WIDTH_HINTS += ("Viewport-Width", "Sec-CH-DPR", "DPR")
CONNECTION_HINTS = ("Save-Data", "ECT", "RTT", "Downlink")
SLOW_ECT = ("slow-2g", "2g", "3g")
AUTO_WIDTHS = (320, 768, 960, 1200, 1600, 1920, 2560, 3840)  # device pixels


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        text = headers.get(name.lower())
        if text is None or len(text) > 16 or not text.isascii():
            continue
        try:
            value = float(text.strip())
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def auto_width(headers: Mapping[str, str], dpr: float) -> int | None:
    """The width ``width=auto`` stands for under these headers, or None (no hint)."""
    device = _number(headers, "sec-ch-width", "width")
    if device is None:
        viewport = _number(headers, "sec-ch-viewport-width", "viewport-width")
        if viewport is None:
            return None
        device = viewport * (_number(headers, "sec-ch-dpr", "dpr") or 1.0)
    return max(1, math.ceil(breakpoint(device) / dpr))


def breakpoint(device: float) -> int:
    """The smallest of AUTO_WIDTHS at least ``device`` wide, else the largest."""
    return next((width for width in AUTO_WIDTHS if width >= device), AUTO_WIDTHS[-1])


def clamp_to_source(options: Options, longer_side: int) -> Options:
    """``options`` with a width=auto width past what fit=scale-down can give brought down to it:
    the source's longer side (in any orientation, after any trim) over ``dpr``. Other fits may
    enlarge, so their widths stay."""
    if options.fit is not Fit.SCALE_DOWN or options.width is None:
        return options
    largest = max(1, math.ceil(longer_side / options.dpr))
    return replace(options, width=largest) if options.width > largest else options


def slow_connection(headers: Mapping[str, str]) -> bool:
    if headers.get("save-data", "").strip().lower() == "on":
        return True
    if headers.get("ect", "").strip().lower() in SLOW_ECT:
        return True
    rtt = _number(headers, "rtt")
    if rtt is not None and rtt > 150:
        return True
    downlink = _number(headers, "downlink")
    return downlink is not None and downlink < 5


def resolve(options: Options, headers: Mapping[str, str]) -> tuple[Options, tuple[str, ...]]:
    """(the options for this request, the hint headers they depend on)."""
    vary: tuple[str, ...] = ()
    if options.width_auto:
        vary += WIDTH_HINTS
        width = auto_width(headers, options.dpr)
        options = replace(options, width=width, width_auto=False)
    if options.slow_connection_quality is not None:
        vary += CONNECTION_HINTS
        if slow_connection(headers):
            options = replace(options, quality=options.slow_connection_quality)
    return options, vary


def clamp_to_source_of(options: Options, data: bytes) -> Options:
    """:func:`clamp_to_source` with the longer side read from the header of ``data`` (a thread's
    work: it parses the source); ``options`` as they are when the header cannot be read (the
    transformation then says what is wrong with the source)."""
    try:
        header = read_header(data)
    except FocalError:
        return options
    return clamp_to_source(options, max(header.width, header.height))
