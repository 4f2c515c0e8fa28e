"""The Accept header, parsed once: which negotiable output formats a client takes, best first.

format=auto serves AVIF or WebP only to a client that names the type itself with a quality above
zero (``image/avif``, ``image/webp;q=0.8``); wildcards (``image/*``, ``*/*``) never select them,
as old browsers send those too. Parameters other than ``q`` are ignored; a malformed ``q`` counts
as 0. The same answer decides the format and the variant's cache key, so a variant is never
stored under a key that another client's Accept also maps to.
"""

from __future__ import annotations

import re

NEGOTIABLE = ("avif", "webp")  # the formats format=auto may choose, in order of preference
MAX_ACCEPT_LENGTH = 4096  # the part of a longer header that is read
QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if QVALUE.fullmatch(value) else 0.0
    return 1.0


def accepted_types(accept: str | None) -> dict[str, float]:
    """Media type (lower case) -> its highest q-value in the header."""
    types: dict[str, float] = {}
    for item in (accept or "")[:MAX_ACCEPT_LENGTH].split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media:
            types[media] = max(types.get(media, 0.0), _quality(params))
    return types


def negotiable_formats(accept: str | None) -> tuple[str, ...]:
    """The formats of NEGOTIABLE the client names with q > 0, highest q first (ties: AVIF)."""
    types = accepted_types(accept)
    ranked = [(types.get(f"image/{fmt}", 0.0), -i, fmt) for i, fmt in enumerate(NEGOTIABLE)]
    return tuple(fmt for q, _, fmt in sorted(ranked, reverse=True) if q > 0)
