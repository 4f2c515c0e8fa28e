"""Every option Cloudflare documents (URL and Workers, Images docs as of 2026), and what focal
does with it: the data of docs/options.md's "Cloudflare's options, one by one" table
(``python -m focal.options --cloudflare``)."""

from __future__ import annotations

CLOUDFLARE: tuple[tuple[str, str], ...] = (
    ("anim", "supported"),
    ("background", "supported (CSS colours; write `#` as `%23` in a URL)"),
    ("blur", "supported"),
    (
        "border",
        "supported: `border=width:10;color:%23ffffff` or "
        "`border=top:5;right:10;bottom:5;left:10;color:red` (Cloudflare documents border for "
        "Workers only; the URL form takes the same keys), added after resizing, times `dpr`",
    ),
    ("brightness", "supported"),
    (
        "compression",
        "supported: `compression=fast` makes `format=auto` pick JPEG (PNG with transparency) "
        "and the encoder its quickest settings",
    ),
    ("contrast", "supported"),
    ("dpr", "supported (1..3; Cloudflare documents up to 2)"),
    (
        "draw",
        "supported (Cloudflare: Workers only): a JSON list of overlays, `b64:` and that JSON in "
        "base64url (the URL form), or the name of a preset with a draw list; every key of "
        "Cloudflare's overlay objects but `text` (see [Overlays](#overlays-draw))",
    ),
    (
        "fit",
        "supported: scale-down, contain, cover, crop, pad, squeeze, scale-up (enlarges to fit "
        "inside, never shrinks), aspect-crop (the target's aspect ratio, never enlarged); also "
        "`fill` (= squeeze) and `inside` (= contain) as frameworks emit them. Refused: "
        "`outside` and `none`, which frameworks emit but Cloudflare does not know",
    ),
    (
        "flip",
        "supported (h, v, hv; also vh), before `rotate` as Cloudflare does "
        "(`flip=h,rotate=90` mirrors, then turns)",
    ),
    ("format", "supported (auto, avif, webp, jpeg, baseline-jpeg, png, gif, json; also `jpg`)"),
    ("gamma", "supported"),
    (
        "gravity",
        "supported (auto, face, left, right, top, bottom, XxY); `face` is focal's RetinaFace crop",
    ),
    ("height", "supported"),
    ("metadata", "supported (keep, copyright, none)"),
    ("onerror", "supported (`redirect`, by `focal serve`)"),
    (
        "origin-auth",
        "not applicable (Workers only: it forwards the request's credentials to the origin; "
        "focal fetches sources itself, with no client credentials)",
    ),
    (
        "quality",
        "supported: 1..100 and Cloudflare's names high, medium-high, medium-low, low; also "
        "Astro's `mid` (65) and `max` (100)",
    ),
    ("rotate", "supported (90, 180, 270), after `flip`"),
    ("saturation", "supported"),
    (
        "segment",
        "refused: `segment=foreground` needs a general foreground segmentation model (Cloudflare "
        "runs BiRefNet); none small enough to ship in a wheel from PyPI was found (BiRefNet's "
        "weights are far above PyPI's file size limit, and the small models packaged on PyPI "
        "segment people only)",
    ),
    ("sharpen", "supported"),
    (
        "slow-connection-quality",
        "supported by `focal serve` (alias `scq`): the quality used when the request's client "
        "hints say the connection is slow (`Save-Data: on`, `ECT` slow-2g/2g/3g, `RTT` over "
        "150 ms, `Downlink` under 5 Mbps); such responses carry "
        "`Vary: Save-Data, ECT, RTT, Downlink`, and the variant cache keeps the two variants "
        "apart. Ask browsers for the hints with `Accept-CH: Save-Data, ECT, RTT, Downlink`",
    ),
    (
        "trim",
        "supported (`top;right;bottom;left` in whole pixels, or `border`); fractions are "
        "refused, as Cloudflare documents pixels only",
    ),
    ("trim.top", "supported: pixels cut from the top"),
    ("trim.right", "supported: pixels cut from the right"),
    ("trim.bottom", "supported: pixels cut from the bottom"),
    ("trim.left", "supported: pixels cut from the left"),
    (
        "trim.width",
        "supported: pixels kept from `trim.left` (not with `trim.right`, nor with `trim=`)",
    ),
    (
        "trim.height",
        "supported: pixels kept from `trim.top` (not with `trim.bottom`, nor with `trim=`)",
    ),
    (
        "trim.border.color",
        "supported, with `trim=border`: the border colour to cut (default: the top-left "
        "pixel's colour, Cloudflare's \"detected automatically\")",
    ),
    (
        "trim.border.tolerance",
        "supported, with `trim=border`: 0 (any pixel counts as border) to 255 (only the exact "
        "colour); default 245",
    ),
    ("trim.border.keep", "supported, with `trim=border`: pixels of the border left on each side"),
    ("upscale", "`interpolate` (the default) supported; `generate` (AI upscaling) refused"),
    (
        "width",
        "supported, including `width=auto`: `focal serve` takes the width from the client "
        "hints `Sec-CH-Width` (or `Width`), else `Sec-CH-Viewport-Width` times `Sec-CH-DPR`, "
        "rounded up to one of 320, 768, 960, 1200 (Cloudflare's four widths), 1600, 1920, "
        "2560, 3840 device pixels, and under `fit=scale-down` no wider than the source; with "
        "none of them, the original width (Cloudflare also guesses from the User-Agent; focal "
        "does not). Such responses carry `Vary` on those headers. `width=auto` has no "
        "sub-options",
    ),
    ("zoom", "supported (alias `face-zoom`), with `gravity=face`"),
)


def cloudflare_markdown() -> str:
    """docs/options.md's table of Cloudflare's options, from ``CLOUDFLARE``."""
    lines = ["| Cloudflare option | focal |", "|---|---|"]
    lines += [f"| `{name}` | {what} |" for name, what in CLOUDFLARE]
    return "\n".join(lines) + "\n"
