"""A request that asks for redaction never yields an unredacted face, by any path of a real
``focal serve``: onerror=redirect (no redirect to the original), format=json, the playground's
upload, presets, signed URLs and the variant cache, with the detector down (the model missing),
and with trim=border. With the real model, the default strength leaves no face that focal's own
detector finds (with trim=border too: faces are found on the trimmed image), and strengths below
the floor are raised to it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
from tests.live import Live, serve
from tests.model_fixtures import require_model_dir
from tests.test_server import DEMO

from focal.options import MIN_REDACT_STRENGTH, parse_options
from focal.pipeline import transform
from focal.server import signing

KEY = "redaction-test-key"
PRESETS = json.dumps({"anon": "width=300,redact=faces,onerror=redirect", "thumb": "width=300"})
ORIGINAL = (DEMO / "astronaut.jpg").read_bytes()


def root_folder(folder: Path) -> Path:
    root = folder / "root"
    root.mkdir(exist_ok=True)
    shutil.copy(DEMO / "astronaut.jpg", root / "astronaut.jpg")
    # the photo off-centre on a wide white border: trim=border cuts 300 px left, 40 right,
    # 160 top and 20 bottom, so faces found on the untrimmed image would land far off the face
    photo = pyvips.Image.new_from_buffer(ORIGINAL, "")
    framed = photo.embed(300, 160, photo.width + 340, photo.height + 180, extend="white")
    framed.pngsave(str(root / "framed.png"))
    return root


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path]]:
    """face detection on, the model missing: every redaction must fail, closed."""
    folder = tmp_path_factory.mktemp("blind")
    (folder / "no-model").mkdir()
    cache = folder / "cache"
    args = ["--root", str(root_folder(folder)), "--cache-dir", str(cache)]
    env = {
        "FOCAL_MODEL_DIR": str(folder / "no-model"),
        "FOCAL_PRESETS": PRESETS,
        "FOCAL_SIGNING_KEYS": KEY,
        "FOCAL_REQUIRE_SIGNATURE": "false",
        "FOCAL_PLAYGROUND": "on",
    }
    live = serve(folder, args, env)
    yield live, cache
    live.stop()


def refused(response: httpx.Response) -> None:
    """An error answer: no redirect, no image, no original bytes."""
    assert response.status_code in (400, 404, 503), (response.status_code, response.headers)
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert ORIGINAL[:64] not in response.content


IMAGE_PATHS = [
    "/cdn-cgi/image/width=300,redact=faces,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/redact=faces,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/width=300,redact=faces,trim=border,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/width=300,redact=faces,format=json,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/width=300,redact=faces,redact-style=pixelate,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/anon/astronaut.jpg",
    "/cdn-cgi/image/preset=anon,onerror=redirect/astronaut.jpg",
    "/cdn-cgi/image/width=300,redact=faces,onerror=redirect/missing.jpg",
]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", IMAGE_PATHS)
def test_no_image_path_gives_the_faces_away(blind: tuple[Live, Path], path: str) -> None:
    live, _ = blind
    for _ in range(2):  # and the second time (the cache) neither
        refused(httpx.get(live.url(path), timeout=60, follow_redirects=False))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_signed_redacting_url_is_not_redirected(blind: tuple[Live, Path]) -> None:
    live, _ = blind
    path = "/cdn-cgi/image/width=300,redact=faces,onerror=redirect/astronaut.jpg"
    refused(httpx.get(live.url(signing.signed_url(path, KEY)), timeout=60))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_playground_upload_does_not_give_the_faces_away(blind: tuple[Live, Path]) -> None:
    live, _ = blind
    for options in ("redact=faces", "redact=faces,format=json", "redact=faces,onerror=redirect"):
        response = httpx.post(
            live.url("/playground/transform"),
            params={"options": options},
            content=ORIGINAL,
            timeout=60,
        )
        refused(response)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_nothing_is_cached_for_a_failed_redaction(blind: tuple[Live, Path]) -> None:
    live, cache = blind
    for path in IMAGE_PATHS:
        httpx.get(live.url(path), timeout=60)
    assert not [p for p in cache.rglob("*") if p.is_file()]
    # the same source without redaction is served (and cached): the fault is redaction's only
    thumb = httpx.get(
        live.url("/cdn-cgi/image/preset=thumb,onerror=redirect/astronaut.jpg"), timeout=60
    )
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


# ---- with the real model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_model_dir()
    folder = tmp_path_factory.mktemp("seeing")
    args = ["--root", str(root_folder(folder)), "--cache-dir", str(folder / "cache")]
    live = serve(folder, args)
    yield live
    live.stop()


def faces_found(data: bytes) -> list[float]:
    """Scores of the faces focal's own detector finds in ``data`` (a fresh detector)."""
    from focal.face.sessions import load_detector

    detector = load_detector(require_model_dir())
    described = transform(data, parse_options("redact=faces,format=json"), detector=detector)
    return [float(face["score"]) for face in json.loads(described.data)["faces"] or []]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("style", ["blur", "pixelate"])
def test_a_redacted_face_is_not_found_by_focals_detector(seeing: Live, style: str) -> None:
    assert max(faces_found(ORIGINAL)) > 0.9  # the face is there to begin with
    for strength in (1, MIN_REDACT_STRENGTH, 100):
        options = f"redact=faces,redact-style={style},redact-strength={strength}"
        response = httpx.get(seeing.url(f"/cdn-cgi/image/{options}/astronaut.jpg"), timeout=60)
        assert response.status_code == 200
        assert [s for s in faces_found(response.content) if s >= 0.5] == [], strength


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_face_redacted_after_trim_border_is_not_found_by_focals_detector(seeing: Live) -> None:
    trimmed = httpx.get(seeing.url("/cdn-cgi/image/trim=border,format=png/framed.png"), timeout=60)
    assert trimmed.status_code == 200
    assert pyvips.Image.new_from_buffer(trimmed.content, "").width == 512  # the photo alone
    assert max(faces_found(trimmed.content)) > 0.9  # the face is there once trimmed
    for options in ("redact=faces,trim=border", "redact=faces,trim=border,width=300,fit=cover"):
        path = f"/cdn-cgi/image/{options},format=png/framed.png"
        response = httpx.get(seeing.url(path), timeout=60)
        assert response.status_code == 200, response.text
        out = pyvips.Image.new_from_buffer(response.content, "")
        assert out.width in (512, 300), options
        assert [s for s in faces_found(response.content) if s >= 0.5] == [], options


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_strength_below_the_floor_is_raised_to_it(seeing: Live) -> None:
    """Clamped, not refused: redact-strength=1 is served as MIN_REDACT_STRENGTH, same bytes and
    ETag as redact=faces alone (one cache key)."""
    floor = httpx.get(seeing.url("/cdn-cgi/image/redact=faces/astronaut.jpg"), timeout=60)
    for strength in (1, MIN_REDACT_STRENGTH - 1):
        options = f"redact=faces,redact-strength={strength}"
        weak = httpx.get(seeing.url(f"/cdn-cgi/image/{options}/astronaut.jpg"), timeout=60)
        assert weak.status_code == 200
        assert weak.content == floor.content and weak.headers["etag"] == floor.headers["etag"]
    assert parse_options("redact=faces,redact-strength=1").redact_strength == MIN_REDACT_STRENGTH
