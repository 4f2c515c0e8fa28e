"""The playground's routes, in process: the page, the samples, and the upload handler.

The page itself, in a real browser against a real ``focal serve``, is in
tests/test_playground_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from starlette.applications import Starlette
from tests.test_pipeline import FixedDetector

from focal.detection import Face, RGBImage
from focal.errors import ImageError, LimitError
from focal.pipeline import Limits
from focal.server import playground
from focal.server.settings import Settings

PACKAGE = Path(playground.__file__).resolve().parents[1]
WEB = PACKAGE / "web"
DEMO = PACKAGE / "demo"
DEMO_IMAGES = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "grace_hopper.jpg", "logo.png"]
TEXT_AS_JPEG = b"This is a text file, whatever its name says.\n" * 20


class OneFace:
    """A fake detector: one face, a quarter of the inference image, top left."""

    model_id = "fake-one-face"

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        return [
            [Face(box=(0.0, 0.0, im.shape[1] / 4, im.shape[0] / 4), score=0.9)] for im in images
        ]


class Client:
    """Requests to the app in this process (httpx's ASGI transport), one event loop each."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get(self, url: str) -> httpx.Response:
        return self.send("GET", url, b"", {}, {})

    def post(
        self,
        url: str,
        content: bytes,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.send("POST", url, content, params or {}, headers or {})

    def send(
        self, method: str, url: str, content: bytes, params: dict[str, str], headers: dict[str, str]
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, content=content, params=params, headers=headers)

        return asyncio.run(go())


DEFAULT_LIMITS = Limits()


def make_client(root: Path = DEMO, limits: Limits = DEFAULT_LIMITS, detector: Any = None) -> Client:
    engine = playground.Standalone(limits, detector)
    app = Starlette(routes=playground.routes(Settings(root=root), engine))
    return Client(app)


@pytest.fixture()
def client() -> Iterator[Client]:
    yield make_client()


def png_bytes(width: int, height: int) -> bytes:
    image = pyvips.Image.black(width, height, bands=3).linear([1, 1, 1], [200, 40, 90])
    data: bytes = image.cast("uchar").pngsave_buffer()
    return data


def decoded_data_url(url: str) -> tuple[str, pyvips.Image]:
    match = re.fullmatch(r"data:([a-z/+-]+);base64,(.+)", url, flags=re.S)
    if match is None:
        pytest.fail(f"not a base64 data URL: {url[:60]}")
    return match[1], pyvips.Image.new_from_buffer(base64.b64decode(match[2]), "")


# ---- sniffing and samples --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        ((DEMO / "astronaut.jpg").read_bytes()[:16], "jpeg"),
        ((DEMO / "logo.png").read_bytes()[:16], "png"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00", "gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "avif"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "heif"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (TEXT_AS_JPEG[:16], None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>"[:16], None),
        (b"%PDF-1.7\n", None),
        (b"", None),
    ],
)
def test_sniff_reads_the_first_bytes(head: bytes, kind: str | None) -> None:
    assert playground.sniff(head) == kind


def test_samples_are_the_demo_images(client: Client) -> None:
    response = client.get("/playground/samples")
    assert response.status_code == 200
    assert response.json() == {"samples": DEMO_IMAGES}


def test_samples_skip_hidden_links_folders_and_non_images(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(png_bytes(4, 4))
    (tmp_path / ".hidden.png").write_bytes(png_bytes(4, 4))
    (tmp_path / "notes.jpg").write_bytes(TEXT_AS_JPEG)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "deep.png").write_bytes(png_bytes(4, 4))
    (tmp_path / "link.png").symlink_to(DEMO / "logo.png")
    assert playground.list_samples(tmp_path) == ["ok.png"]


def test_original_serves_listed_samples_only(client: Client) -> None:
    response = client.get("/playground/original/astronaut.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == (DEMO / "astronaut.jpg").read_bytes()
    for name in ("LICENSES.md", "missing.png", ".hidden.png"):
        refused = client.get(f"/playground/original/{name}")
        assert refused.status_code == 404, name
        assert "No sample named" in refused.json()["error"]
    for path in ("..%2Fdetection.py", "..%2F..%2Fpipeline.py", "%2Fetc%2Fpasswd", "a%00.jpg", ".."):
        assert client.get(f"/playground/original/{path}").status_code == 404, path


# ---- the page --------------------------------------------------------------------------------


def test_page_and_assets_are_served_with_a_same_origin_policy(client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert 'id="sample"' in page.text and 'role="alert"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = client.get(f"/playground/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    assert client.get("/playground/static/index.html").status_code == 404
    assert client.get("/playground/static/..%2Fserver%2Fplayground.py").status_code == 404


def test_page_files_name_no_outside_host() -> None:
    svg_namespace = "http://www.w3.org/2000/svg"
    for path in WEB.iterdir():
        text = path.read_text(encoding="utf-8").replace(svg_namespace, "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), path.name


def test_every_form_control_has_a_label() -> None:
    html = (WEB / "index.html").read_text(encoding="utf-8")
    controls = re.findall(r"<(?:input|select)\b[^>]*\bid=\"([^\"]+)\"", html)
    labelled = set(re.findall(r"<label\b[^>]*\bfor=\"([^\"]+)\"", html))
    assert len(controls) >= 10
    assert set(controls) <= labelled


def test_routes_are_off_when_disabled_or_when_urls_must_be_signed() -> None:
    assert playground.routes(Settings(playground="off")) == []
    assert playground.routes(Settings(signing_keys=("key",))) == []
    assert playground.routes(Settings(signing_keys=("key",), require_signature=False)) != []


# ---- uploads ---------------------------------------------------------------------------------


def test_upload_is_transformed_and_returned_as_a_data_url(client: Client) -> None:
    response = client.post(
        "/playground/transform",
        params={"options": "width=64,height=32,fit=cover"},
        content=png_bytes(200, 100),
        headers={"content-type": "text/plain"},  # declared type is ignored: content decides
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert body["description"]["width"] == 64 and body["description"]["height"] == 32
    assert body["description"]["original"]["width"] == 200
    kind, image = decoded_data_url(body["image"])
    assert kind == "image/png"
    assert (image.width, image.height) == (64, 32)


def test_upload_with_format_json_answers_the_description_only(client: Client) -> None:
    response = client.post(
        "/playground/transform",
        params={"options": "width=50,format=json"},
        content=(DEMO / "astronaut.jpg").read_bytes(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["image"] is None
    assert response.json()["description"]["width"] == 50


def test_upload_face_gravity_shows_the_faces_and_the_crop() -> None:
    with make_client(detector=OneFace()) as client:
        response = client.post(
            "/playground/transform",
            params={"options": "width=100,height=100,fit=cover,gravity=face,zoom=1"},
            content=(DEMO / "astronaut.jpg").read_bytes(),
        )
    assert response.status_code == 200, response.text
    description = response.json()["description"]
    assert description["faces"] == [{"box": [0.0, 0.0, 128.0, 128.0], "score": 0.9}]
    assert description["crop"] == {"left": 0, "top": 0, "width": 128, "height": 128}
    assert description["fallback"] is None


def test_upload_without_a_detector_shows_the_fallback(client: Client) -> None:
    response = client.post(
        "/playground/transform",
        params={"options": "width=100,height=100,fit=cover,gravity=face"},
        content=(DEMO / "astronaut.jpg").read_bytes(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["description"]["fallback"] == "face detection is not available"


def test_text_named_jpeg_is_refused_with_415(client: Client) -> None:
    response = client.post(
        "/playground/transform?options=width=100",
        content=TEXT_AS_JPEG,
        headers={"content-type": "image/jpeg", "content-disposition": 'filename="photo.jpg"'},
    )
    assert response.status_code == 415
    message = response.json()["error"]
    assert "not an image" in message and "by its content" in message


def test_empty_upload_is_refused(client: Client) -> None:
    response = client.post("/playground/transform?options=width=100", content=b"")
    assert response.status_code == 415
    assert "empty" in response.json()["error"]


def test_truncated_image_is_refused_by_the_decoder(client: Client) -> None:
    data = (DEMO / "astronaut.jpg").read_bytes()[:500]
    response = client.post("/playground/transform?options=width=100", content=data)
    assert response.status_code == 415
    assert "truncated or corrupt" in response.json()["error"]


def test_bad_option_is_a_400_naming_the_option(client: Client) -> None:
    response = client.post(
        "/playground/transform", params={"options": "width=wide"}, content=png_bytes(8, 8)
    )
    assert response.status_code == 400
    assert "width" in response.json()["error"] and "'wide'" in response.json()["error"]


def test_upload_over_the_byte_limit_is_a_413() -> None:
    with make_client(limits=Limits(max_bytes=1000)) as client:
        response = client.post(
            "/playground/transform?options=width=10", content=png_bytes(300, 300)
        )
        small = client.post("/playground/transform?options=width=10", content=png_bytes(8, 8))
    assert response.status_code == 413
    assert "1,000 bytes" in response.json()["error"]
    assert small.status_code == 200


def test_upload_over_the_pixel_limit_is_a_413() -> None:
    with make_client(limits=Limits(max_pixels=10_000)) as client:
        response = client.post(
            "/playground/transform?options=width=10", content=png_bytes(200, 200)
        )
    assert response.status_code == 413


def test_the_playground_cap_applies_below_a_larger_server_limit() -> None:
    assert playground.upload_limit(Limits(max_bytes=10**12)) == playground.UPLOAD_MAX_BYTES
    assert playground.upload_limit(Limits(max_bytes=5000)) == 5000


def test_body_reading_stops_as_soon_as_the_limit_is_passed() -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"x" * 1000

    with pytest.raises(LimitError):
        asyncio.run(playground.read_limited(chunks(), 2500))
    assert pulled == [0, 1, 2]


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(LimitError):
        playground.check_declared_length("5001", 5000)
    playground.check_declared_length("5000", 5000)
    playground.check_declared_length(None, 5000)


def test_uploads_leave_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"
    root = tmp_path / "root"
    temp.mkdir()
    root.mkdir()
    (root / "kept.png").write_bytes(png_bytes(8, 8))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    noise = pyvips.Image.gaussnoise(1200, 1200, sigma=80).cast("uchar")
    big: bytes = noise.pngsave_buffer()  # over 1 MB: where a multipart parser spools to disk
    assert len(big) > 1024 * 1024
    with make_client(root=root) as client:
        ok = client.post("/playground/transform?options=width=100", content=big)
        bad = client.post("/playground/transform?options=width=100", content=TEXT_AS_JPEG)
    assert (ok.status_code, bad.status_code) == (200, 415)
    assert list(temp.iterdir()) == []
    assert [p.name for p in root.iterdir()] == ["kept.png"]


def test_the_server_app_mounts_the_page_and_runs_uploads_on_its_image_threads(
    tmp_path: Path,
) -> None:
    from focal.server.app import create_app

    settings = Settings(root=DEMO, cache_dir=tmp_path / "cache", face=False)
    app = create_app(settings)
    client = Client(app)
    try:
        page = client.get("/")
        upload = client.post(
            "/playground/transform", params={"options": "width=40"}, content=png_bytes(80, 80)
        )
    finally:
        app.state.service.workers.shutdown()
    assert page.status_code == 200 and 'id="overlay"' in page.text
    assert upload.status_code == 200, upload.text
    assert upload.json()["description"]["width"] == 40


def test_a_full_image_queue_answers_503_for_uploads(tmp_path: Path) -> None:
    from focal.server.app import ImageWorkers, create_app

    settings = Settings(root=DEMO, cache_dir=tmp_path / "cache", face=False)
    app = create_app(settings)
    app.state.service.workers.shutdown()
    workers = ImageWorkers(threads=1, queue=0)
    app.state.service.workers = workers
    release = threading.Event()

    def hold() -> Any:
        release.wait(30)
        return None

    async def busy_then_upload() -> httpx.Response:
        holder = asyncio.ensure_future(workers.run(hold))
        await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            answer = await c.post(
                "/playground/transform", params={"options": "width=40"}, content=png_bytes(8, 8)
            )
        release.set()
        await holder
        return answer

    try:
        response = asyncio.run(busy_then_upload())
    finally:
        release.set()
        workers.shutdown()
    assert response.status_code == 503
    assert "busy" in response.json()["error"]
    assert response.headers["retry-after"] == "1"


def test_a_body_that_never_ends_in_time_is_a_504() -> None:
    app = Starlette(routes=playground.routes(Settings(root=DEMO, request_timeout_s=0.3)))

    async def slow_body() -> AsyncIterator[bytes]:
        yield png_bytes(8, 8)[:10]
        await asyncio.sleep(5)
        yield b"never"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post("/playground/transform?options=width=10", content=slow_body())

    response = asyncio.run(go())
    assert response.status_code == 504
    assert "too long" in response.json()["error"]


def test_the_docs_quote_the_refusal_message_as_it_is() -> None:
    docs = PACKAGE.parents[1] / "docs" / "playground.md"
    text = " ".join(docs.read_text(encoding="utf-8").split())
    with pytest.raises(ImageError) as refused:
        playground.check_image(TEXT_AS_JPEG)
    assert refused.value.public in text


@pytest.mark.parametrize(("side", "seen"), [("cap", (1024, 683)), ("output", (768, 512))])
def test_uploads_detect_at_the_servers_face_crop_side(side: str, seen: tuple[int, int]) -> None:
    detector = FixedDetector([])  # records the size of every image it is shown
    engine = playground.Standalone(DEFAULT_LIMITS, detector, face_crop_side=side)
    app = Starlette(routes=playground.routes(Settings(root=DEMO), engine))
    photo = png_bytes(2048, 1366)
    options = "width=256,height=256,fit=cover,gravity=face,format=json"
    response = Client(app).post("/playground/transform", photo, params={"options": options})
    assert response.status_code == 200, response.text
    assert detector.seen == [seen]
