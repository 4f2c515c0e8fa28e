"""focal.url (Python) and js/index.js build the same URLs, and a real server with signing keys
serves their signed URLs (200) and refuses them signed with another key (403)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.live import Live, serve

import focal
from focal.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "focal" / "demo"
KEYS = ("current-key", "old-key")
NODE = shutil.which("node")
REQUESTS: list[dict[str, Any]] = [
    {"source": "coffee.jpg", "options": {"width": 200, "format": "webp"}},
    {
        "source": "/coffee.jpg",
        "options": {"width": 120, "background": "#ff0000", "fit": "pad", "height": 120},
    },
    {"source": "astronaut.jpg", "preset": "avatar"},
    {"source": "astronaut.jpg", "preset": "avatar", "options": {"format": "png"}},
    {"source": "with space.jpg", "options": "width=90,border=width:2;color:%23000"},
    {
        "source": "coffee.jpg",
        "options": {
            "width": 100,
            "draw": [{"url": "astronaut.jpg", "width": 0.25, "bottom": 2, "right": 2}],
        },
    },
]


def python_url(request: dict[str, Any], key: str | None, base: str) -> str:
    return focal.url(
        request["source"], request.get("options"), preset=request.get("preset"), key=key, base=base
    )


def node_urls(requests: list[dict[str, Any]], key: str | None, base: str) -> list[str]:
    assert NODE is not None
    payload = json.dumps([request | {"key": key, "base": base} for request in requests])
    out = subprocess.run(
        [NODE, str(ROOT / "tests" / "url_builder.mjs"), payload],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("urls")
    root = folder / "root"
    root.mkdir()
    for name in ("coffee.jpg", "astronaut.jpg"):
        shutil.copy(DEMO / name, root / name)
    shutil.copy(DEMO / "coffee.jpg", root / "with space.jpg")
    env = {
        "FOCAL_SIGNING_KEYS": ",".join(KEYS),
        "FOCAL_PRESETS": json.dumps({"avatar": "width=128,height=128,fit=cover"}),
    }
    live = serve(folder, ["--root", str(root), "--no-face", "--no-cache-enabled"], env=env)
    yield live
    live.stop()


def test_python_builds_checked_urls() -> None:
    assert focal.url("a.jpg", {"width": 10, "background": "#fff"}) == (
        "/cdn-cgi/image/width=10,background=%23fff/a.jpg"
    )
    assert focal.url("a.jpg", preset="avatar", base="https://img.example/") == (
        "https://img.example/cdn-cgi/image/avatar/a.jpg"
    )
    with pytest.raises(OptionError, match="for width"):
        focal.url("a.jpg", {"width": 0})
    with pytest.raises(OptionError, match="needs one"):
        focal.url("a.jpg")
    drawn = focal.url("a.jpg", {"draw": [{"url": "logo.png", "repeat": True, "opacity": 0.2}]})
    encoded = "W3sidXJsIjoibG9nby5wbmciLCJyZXBlYXQiOnRydWUsIm9wYWNpdHkiOjAuMn1d"
    assert drawn == f"/cdn-cgi/image/draw=b64:{encoded}/a.jpg"
    with pytest.raises(OptionError, match=r"for draw\[0\].opacity"):
        focal.url("a.jpg", {"draw": [{"url": "logo.png", "opacity": 2}]})


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_both_builders_signed_urls_are_served_and_a_wrong_key_is_refused(server: Live) -> None:
    for key in KEYS:
        from_node = node_urls(REQUESTS, key, server.base)
        from_python = [python_url(request, key, server.base) for request in REQUESTS]
        assert from_node == from_python
        for built in from_python:
            response = httpx.get(built, timeout=60)
            assert response.status_code == 200, (built, response.text)
            assert response.headers["content-type"].startswith("image/")
    for built in node_urls(REQUESTS, "wrong-key", server.base):
        response = httpx.get(built, timeout=60)
        assert response.status_code == 403, built
        assert "signature" in response.json()["error"]
    unsigned = python_url(REQUESTS[0], None, server.base)
    assert httpx.get(unsigned, timeout=60).status_code == 403
