"""draw in ``focal serve``: overlays fetched through the server's own origins (the source's checks:
root, remote prefixes, SSRF, byte limit), cached per process, in the variant's cache key, and
refused with the status a source would get, naming the overlay."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
from tests.live import serve, static_origin

from focal.options import draw_b64
from focal.server.app import Origins, create_app
from focal.server.origins import LocalOrigin, Source, is_remote
from focal.server.overlays import OverlayCache
from focal.server.settings import Settings

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"
RED = (255, 0, 0)


def solid_png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    image = (pyvips.Image.black(width, height) + list(colour)).cast("uchar")
    return bytes(image.copy(interpretation="srgb").pngsave_buffer())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "brand").mkdir(parents=True)
    shutil.copy(DEMO / "coffee.jpg", folder / "coffee.jpg")
    (folder / "brand" / "mark.png").write_bytes(solid_png(20, 10, RED))
    outside = tmp_path / "outside.png"
    outside.write_bytes(solid_png(20, 10, RED))
    return folder


def path_for(overlays: list[dict[str, object]], extra: str = "width=200,format=png") -> str:
    return f"/cdn-cgi/image/{extra},draw={draw_b64(overlays)}/coffee.jpg"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 2  # past the overlay cache's recheck interval


class CountingOrigin(LocalOrigin):
    def __init__(self, root: Path) -> None:
        super().__init__(root, 10 << 20)
        self.fetched: list[str] = []

    async def fetch(self, path: str) -> Source:
        self.fetched.append(path)
        return await super().fetch(path)


Step = str | Callable[[], None]  # a path to GET, or something to do between requests


def get_all(
    settings: Settings, steps: list[Step], service: dict[str, object] | None = None
) -> list[httpx.Response]:
    """The responses to the GETs of ``steps``, in order, from one in-process app (its service's
    attributes replaced by ``service``)."""
    app = create_app(settings)
    for name, value in (service or {}).items():
        setattr(app.state.service, name, value)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        responses = []
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for step in steps:
                if callable(step):
                    step()
                else:
                    responses.append(await client.get(step))
        return responses

    try:
        return asyncio.run(run())
    finally:
        app.state.service.workers.shutdown()


def pixel(response: httpx.Response, x: int, y: int) -> tuple[int, ...]:
    image = pyvips.Image.new_from_buffer(response.content, "")
    return tuple(int(v) for v in image(x, y))


def test_a_local_overlay_is_drawn(root: Path) -> None:
    settings = Settings(root=root, cache_enabled=False, face=False)
    (response,) = get_all(settings, [path_for([{"url": "brand/mark.png", "top": 0, "left": 0}])])
    assert response.status_code == 200
    assert pixel(response, 5, 5)[:3] == RED and pixel(response, 30, 30)[:3] != RED


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("brand/missing.png", 404, "draw[1] overlay 'brand/missing.png': source not found"),
        ("../outside.png", 403, "draw[1] overlay '../outside.png': source path not allowed"),
        ("https://example.com/x.png", 403, "Remote sources are not enabled on this server"),
        ("coffee.jpg%00.png", 403, "source path not allowed"),
    ],
)
def test_an_overlay_that_cannot_be_loaded_is_refused_naming_it(
    root: Path, url: str, status: int, message: str
) -> None:
    settings = Settings(root=root, cache_enabled=False, face=False)
    (response,) = get_all(settings, [path_for([{"url": "brand/mark.png"}, {"url": url}])])
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and f"draw[1] overlay {url!r}" in error


def test_an_overlay_over_the_byte_limit_is_a_413_naming_it(root: Path) -> None:
    settings = Settings(root=root, cache_enabled=False, face=False, max_bytes=200_000)
    (root / "brand" / "big.png").write_bytes(b"\x89PNG" + b"\0" * 300_000)
    (response,) = get_all(settings, [path_for([{"url": "brand/big.png"}])])
    assert response.status_code == 413
    assert response.json()["error"].startswith("draw[0] overlay 'brand/big.png': source is over")


def test_an_overlay_is_fetched_once_and_reused_while_unchanged(root: Path) -> None:
    settings = Settings(root=root, cache_enabled=False, face=False)
    origin = CountingOrigin(root)
    clock = Clock()
    app_origins = Origins(local=origin, remote=None, is_remote=is_remote)
    overlay = [{"url": "brand/mark.png", "top": 0, "left": 0}]
    paths = [path_for(overlay, f"width={w},format=png") for w in (100, 120)]
    service = {"origins": app_origins, "overlay_cache": OverlayCache(clock=clock)}
    responses = get_all(settings, [paths[0], paths[1], clock.tick, paths[0]], service)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert origin.fetched.count("brand/mark.png") == 1  # reused; after the tick, its identity read


def test_a_changed_overlay_file_makes_a_new_variant(root: Path, tmp_path: Path) -> None:
    settings = Settings(root=root, cache_dir=tmp_path / "cache", face=False, memory_cache_mb=0)
    clock = Clock()
    path = path_for([{"url": "brand/mark.png", "top": 0, "left": 0}])
    mark = root / "brand" / "mark.png"

    def change() -> None:
        mark.write_bytes(solid_png(30, 10, (0, 255, 0)))

    service = {"overlay_cache": OverlayCache(clock=clock)}
    responses = get_all(settings, [path, path, change, clock.tick, path, path], service)
    first, again, changed, changed_again = responses
    assert [r.headers["focal-cache"] for r in responses] == ["miss", "hit", "miss", "hit"]
    assert pixel(first, 5, 5)[:3] == RED and pixel(again, 5, 5)[:3] == RED
    assert pixel(changed, 5, 5)[:3] == (0, 255, 0) and pixel(changed, 25, 5)[:3] == (0, 255, 0)
    assert changed.content == changed_again.content != first.content


def test_overlay_cache_is_bounded_by_bytes() -> None:
    cache = OverlayCache(max_bytes=1000)
    fetched: list[str] = []

    async def fetch(url: str) -> Source:
        fetched.append(url)
        return Source(b"x" * 200, f"id:{url}", None)

    async def identify(url: str) -> str | None:
        return f"id:{url}"

    async def run() -> None:
        for url in ("a", "b", "c", "d", "e", "f", "a"):
            await cache.load(url, fetch, identify)

    asyncio.run(run())
    assert fetched == ["a", "b", "c", "d", "e", "f", "a"]  # a was evicted: 6 x 200 > 1000
    assert cache._bytes <= 1000


# ---- a real server: presets, the URL form, remote overlays ------------------------------------


@pytest.fixture
def served(root: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "stamp.png").write_bytes(solid_png(10, 10, (0, 0, 255)))
    with static_origin(remote) as origin:
        mark = [{"url": "brand/mark.png", "bottom": 0, "right": 0}]
        presets = {"brand": "draw=" + json.dumps(mark), "card": "width=200,format=png,draw=brand"}
        env = {"FOCAL_PRESETS": json.dumps(presets)}
        args = ["--root", str(root), "--cache-dir", str(tmp_path / "cache"), "--no-face"]
        args += ["--remote-prefixes", f"{origin}/"]
        live = serve(tmp_path, args, env)
        try:
            yield live.base, origin
        finally:
            live.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_draw_over_a_real_server_by_preset_and_by_url(served: tuple[str, str]) -> None:
    base, origin = served
    by_preset = httpx.get(f"{base}/cdn-cgi/image/card/coffee.jpg", timeout=30)
    by_name = httpx.get(f"{base}/cdn-cgi/image/width=200,format=png,draw=brand/coffee.jpg")
    overlay = [{"url": "brand/mark.png", "bottom": 0, "right": 0}]
    by_url = httpx.get(base + path_for(overlay), timeout=30)
    for response in (by_preset, by_name, by_url):
        assert response.status_code == 200, response.text
        image = pyvips.Image.new_from_buffer(response.content, "")
        corner = tuple(int(v) for v in image(image.width - 5, image.height - 5))
        assert corner[:3] == RED and tuple(int(v) for v in image(5, 5))[:3] != RED
    assert by_preset.content == by_name.content == by_url.content
    # a remote overlay goes through the source's SSRF check: loopback is refused
    remote = httpx.get(base + path_for([{"url": f"{origin}/stamp.png"}]), timeout=30)
    assert remote.status_code == 403
    assert (
        f"draw[0] overlay '{origin}/stamp.png': source host not allowed" in remote.json()["error"]
    )
    unknown = httpx.get(f"{base}/cdn-cgi/image/width=200,draw=nothing/coffee.jpg", timeout=30)
    assert unknown.status_code == 400 and "draw list (brand) for draw" in unknown.json()["error"]


class SlowOverlayOrigin(LocalOrigin):
    """The root, with one overlay that takes a minute to arrive."""

    async def fetch(self, path: str) -> Source:
        if path == "brand/slow.png":
            await asyncio.sleep(60)
        return await super().fetch(path)


def test_an_overlay_counts_in_the_requests_deadline(root: Path) -> None:
    settings = Settings(root=root, cache_enabled=False, face=False, request_timeout_s=0.5)
    (root / "brand" / "slow.png").write_bytes(solid_png(4, 4, RED))
    origins = Origins(local=SlowOverlayOrigin(root, 10 << 20), remote=None, is_remote=is_remote)
    (response,) = get_all(settings, [path_for([{"url": "brand/slow.png"}])], {"origins": origins})
    assert response.status_code == 504 and "too long" in response.json()["error"]
