"""What a real ``focal serve`` does with the URLs web frameworks write: presets (config file and
environment forms, presets-only mode), client hints (width=auto, slow-connection-quality) and the
variant cache, sources written as ``//a.jpg`` or percent-encoded URLs, Cloudflare options."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
from tests.live import Live, serve, static_origin

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"
AVATAR = "width=256,height=256,fit=cover,gravity=face,zoom=0.6"
COFFEE = pyvips.Image.new_from_file(str(DEMO / "coffee.jpg"))


def size(data: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.width, image.height


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain HTTP server on loopback holding coffee.jpg: a remote origin."""
    folder = tmp_path_factory.mktemp("origin")
    shutil.copy(DEMO / "coffee.jpg", folder / "coffee.jpg")
    with static_origin(folder) as base:
        yield base


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("root")
    for name in ("astronaut.jpg", "coffee.jpg", "logo.png"):
        shutil.copy(DEMO / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, root: Path, origin: str) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("dropin")
    config = folder / "focal.toml"
    config.write_text(
        f'presets = {{avatar = "{AVATAR}", thumb = "width=100,format=webp", '
        'hinted = "width=auto"}\n'
        f'remote_prefixes = ["{origin}/"]\n'
        'allowed_networks = ["127.0.0.0/8"]\n'
        f'cache_dir = "{folder / "cache"}"\n'
    )
    live = serve(folder, ["--config", str(config), "--root", str(root), "--no-face"])
    yield live
    live.stop()


@pytest.fixture(scope="module")
def presets_only(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("presets-only")
    env = {"FOCAL_PRESETS": json.dumps({"avatar": AVATAR}), "FOCAL_PRESETS_ONLY": "true"}
    live = serve(folder, ["--root", str(root), "--no-face", "--no-cache-enabled"], env=env)
    yield live
    live.stop()


def get(live: Live, path: str, **headers: str) -> httpx.Response:
    return httpx.get(live.url(path), headers=headers, timeout=60)


def test_a_preset_by_name_and_with_options_that_replace_its_own(server: Live) -> None:
    response = get(server, "/cdn-cgi/image/avatar/astronaut.jpg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert size(response.content) == (256, 256)
    response = get(server, "/cdn-cgi/image/preset=avatar,width=128/astronaut.jpg")
    assert response.status_code == 200 and size(response.content) == (128, 256)
    response = get(server, "/cdn-cgi/image/thumb/coffee.jpg")
    assert response.headers["content-type"] == "image/webp" and size(response.content)[0] == 100


def test_an_unknown_preset_is_a_400_that_lists_the_presets(server: Live) -> None:
    for path in ("/cdn-cgi/image/nosuch/coffee.jpg", "/cdn-cgi/image/preset=nosuch/coffee.jpg"):
        response = get(server, path)
        assert response.status_code == 400
        assert "avatar, hinted, thumb" in response.json()["error"], response.text


def test_presets_only_refuses_free_form_options_naming_the_rule(presets_only: Live) -> None:
    for options in ("width=100", "preset=avatar,width=100"):
        response = get(presets_only, f"/cdn-cgi/image/{options}/coffee.jpg")
        assert response.status_code == 403
        error = response.json()["error"]
        assert "presets only" in error and "presets_only" in error and "avatar" in error
    for options in ("avatar", "preset=avatar"):
        response = get(presets_only, f"/cdn-cgi/image/{options}/astronaut.jpg")
        assert response.status_code == 200 and size(response.content) == (256, 256)


def test_width_auto_follows_the_client_hints_and_varies_on_them(server: Live) -> None:
    path = "/cdn-cgi/image/width=auto/coffee.jpg"
    hinted = get(server, path, **{"Sec-CH-Width": "300"})  # up to the 320 breakpoint
    assert hinted.status_code == 200 and size(hinted.content)[0] == 320
    assert "Sec-CH-Width" in hinted.headers["vary"]
    viewport = get(server, path, **{"Sec-CH-Viewport-Width": "100", "Sec-CH-DPR": "2"})
    assert size(viewport.content)[0] == 320
    plain = get(server, path)
    assert size(plain.content) == (COFFEE.width, COFFEE.height)
    again = get(server, path, **{"Sec-CH-Width": "310"})
    assert again.headers["focal-cache"] == "hit" and size(again.content)[0] == 320


def test_width_auto_makes_one_variant_per_distinct_output(server: Live) -> None:
    """A width=auto preset on a 512 px source: hinted widths from 1 to 12000 give two outputs
    (the 320 breakpoint, and the source's own size for every wider one), each under one ETag,
    and a hint asked again is a cache hit."""
    path = "/cdn-cgi/image/hinted/astronaut.jpg"
    widths = (1, 100, 319, 320, 321, 500, 512, 513, 600, 768, 1000, 2000, 4000, 11999, 12000)
    answers = {w: get(server, path, **{"Sec-CH-Width": str(w)}) for w in widths}
    assert all(a.status_code == 200 for a in answers.values())
    etags = {w: a.headers["etag"] for w, a in answers.items()}
    assert len(set(etags.values())) == 2, etags
    by_etag = {a.headers["etag"]: a.content for a in answers.values()}
    assert all(by_etag[a.headers["etag"]] == a.content for a in answers.values())
    assert {size(c)[0] for c in by_etag.values()} == {320, 512}
    for width in (4000, 12000, 640):
        again = get(server, path, **{"Sec-CH-Width": str(width)})
        assert again.headers["focal-cache"] == "hit" and again.headers["etag"] == etags[4000]


def test_slow_connection_quality_applies_on_slow_hints_and_the_cache_keeps_both(
    server: Live,
) -> None:
    path = "/cdn-cgi/image/width=400,quality=95,slow-connection-quality=20/coffee.jpg"
    fast = get(server, path)
    slow = get(server, path, **{"Save-Data": "on"})
    assert fast.status_code == slow.status_code == 200
    assert len(slow.content) < len(fast.content) / 2
    for response in (fast, slow):
        assert {"Save-Data", "ECT", "RTT", "Downlink"} <= set(response.headers["vary"].split(", "))
    for headers in ({"ECT": "3g"}, {"RTT": "400"}, {"Downlink": "1.5"}):
        assert get(server, path, **headers).content == slow.content, headers
    assert get(server, path, ECT="4g", RTT="50", Downlink="20").content == fast.content
    assert get(server, path).headers["focal-cache"] == "hit"
    assert get(server, path, **{"Save-Data": "on"}).content == slow.content


def test_sources_as_frameworks_write_them(server: Live, origin: str) -> None:
    doubled = get(server, "/cdn-cgi/image/width=120//coffee.jpg")
    assert doubled.status_code == 403
    assert "starts with a slash" in doubled.json()["error"]
    assert "docs/frameworks.md" in doubled.json()["error"]
    encoded = origin.replace(":", "%3A").replace("/", "%2F") + "%2Fcoffee.jpg"
    response = get(server, f"/cdn-cgi/image/width=130/{encoded}")
    assert response.status_code == 200, response.text
    assert size(response.content)[0] == 130
    plain = get(server, f"/cdn-cgi/image/width=130/{origin}/coffee.jpg")
    assert plain.status_code == 200 and plain.content == response.content


def test_percent_encoded_values_and_cloudflare_options(server: Live) -> None:
    path = "/cdn-cgi/image/width=200,height=200,fit=pad,background=%23ff0000,format=png/coffee.jpg"
    response = get(server, path)
    assert response.status_code == 200
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert (image.width, image.height) == (200, 200) and image(100, 2)[:3] == [255, 0, 0]
    bordered = get(server, "/cdn-cgi/image/width=100,border=width:5;color:%23000000/coffee.jpg")
    assert bordered.status_code == 200 and size(bordered.content)[0] == 110
    for options, name in (("segment=foreground", "segment"), ("fit=outside", "fit=outside")):
        refused = get(server, f"/cdn-cgi/image/width=100,{options}/coffee.jpg")
        assert refused.status_code == 400
        assert f"The option {name} is not supported by focal" in refused.json()["error"]
