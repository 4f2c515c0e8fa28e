"""format=auto: one Accept parser decides both the format and the cache key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.test_server import Server, fresh_server

from focal.accept import accepted_types, negotiable_formats


@pytest.mark.parametrize(
    ("accept", "formats"),
    [
        ("image/avif,image/webp,image/*,*/*;q=0.8", ("avif", "webp")),
        ("image/avif;q=0, image/jpeg", ()),
        ("image/avif;q=0.0,image/webp", ("webp",)),
        ("text/html;x=image/avif", ()),
        ("text/html;level=1;q=0.5, image/webp;foo=image/avif", ("webp",)),
        ("image/webp;q=0.9, image/avif;q=0.5", ("webp", "avif")),
        ("image/webp;q=1, image/avif;q=1", ("avif", "webp")),
        ("IMAGE/AVIF", ("avif",)),
        ("image/*", ()),
        ("*/*", ()),
        ("image/avif;q=abc", ()),
        ("image/avif;q=2", ()),
        ("image/avif; q = 0.7", ("avif",)),
        ("", ()),
        ("image/avifx, image/web", ()),
        ("image/avif;q=0, image/avif;q=0.5", ("avif",)),
    ],
)
def test_negotiable_formats(accept: str, formats: tuple[str, ...]) -> None:
    assert negotiable_formats(accept) == formats


def test_accepted_types_reads_q_values() -> None:
    assert accepted_types("image/webp;q=0.5, */*;q=0.1") == {"image/webp": 0.5, "*/*": 0.1}


ACCEPTS = (
    "image/avif;q=0, image/jpeg",
    "text/html;x=image/avif",
    "image/avif,image/webp,*/*",
    "image/webp",
    "image/webp;q=0,image/avif;q=0",
    "image/*",
    "",
    "image/webp;q=0.9,image/avif;q=0.5",
)
MAGIC = {"image/avif": b"ftypavif", "image/webp": b"WEBP", "image/jpeg": b"\xff\xd8\xff"}


def allowed(accept: str, content_type: str) -> bool:
    """The served type is one the client named with q > 0, or the fallback JPEG."""
    if content_type == "image/jpeg":
        return True
    return accepted_types(accept).get(content_type, 0.0) > 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from fresh_server(tmp_path_factory, "accept")


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_served_bytes_match_what_each_client_accepts_fresh_and_cached(
    server: Server, order: str
) -> None:
    # The same URL for every Accept, in two orders: whichever client comes first fills the cache,
    # and every later one must still get a type it accepts, with the bytes of that type.
    accepts = ACCEPTS if order == "forward" else tuple(reversed(ACCEPTS))
    path = server.url(f"/cdn-cgi/image/width=120,format=auto,q={70 if order == 'forward' else 71}")
    seen: dict[str, str] = {}
    for round_ in ("fresh", "cached"):
        for accept in accepts:
            r = httpx.get(path + "/coffee.jpg", headers={"Accept": accept})
            assert r.status_code == 200, r.text
            kind = r.headers["content-type"]
            assert allowed(accept, kind), (round_, accept, kind)
            assert MAGIC[kind] in r.content[:16]
            assert r.headers["vary"] == "Accept"
            assert seen.setdefault(accept, kind) == kind
            if round_ == "cached":
                assert r.headers["focal-cache"] == "hit"
    assert seen["image/avif;q=0, image/jpeg"] == "image/jpeg"
    assert seen["image/webp;q=0.9,image/avif;q=0.5"] == "image/webp"
    assert seen["image/avif,image/webp,*/*"] == "image/avif"
