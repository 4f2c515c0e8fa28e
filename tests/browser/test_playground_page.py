"""The playground page end to end: headless Chromium against a real ``focal serve`` subprocess.

Screenshots go to test-artifacts/ (not committed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from playground_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO,
    ROOT,
    Server,
    environment_note,
    free_port,
    wait_until_up,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FACE_OPTIONS = "width=256,height=256,fit=cover,gravity=face,zoom=0.6"
DONE = "body[data-state=done]"
FAILED = "body[data-state=error]"
PIXEL_TOLERANCE = 1.5


# ---- fixtures: a real focal serve subprocess and headless Chromium ----------------------------


@pytest.fixture(scope="module")
def focal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = work / "serve.log"
    command = [sys.executable, "-m", "focal", "serve", "--root", str(DEMO)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--cache-dir", str(work / "cache")]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_until_up(base, process, log)
        yield Server(base=base, log=log, health=health)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium); they never download a browser."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture()
def requests_seen() -> list[str]:
    return []


@pytest.fixture()
def page(browser: Any, requests_seen: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    tab = context.new_page()
    tab.on("request", lambda request: requests_seen.append(request.url))
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()
    if errors:
        pytest.fail(f"the page raised script errors: {errors}")


# ---- helpers ---------------------------------------------------------------------------------


def wait_done(page: Any) -> None:
    page.wait_for_selector(f"{DONE}, {FAILED}", state="attached")
    state = page.get_attribute("body", "data-state")
    if state != "done":
        pytest.fail(f"the page shows an error: {page.inner_text('#error')!r}")


def set_face_options(page: Any) -> None:
    page.get_by_label("Width (px)").fill("256")
    page.get_by_label("Height (px)").fill("256")
    page.get_by_label("Fit").select_option("cover")
    page.get_by_label("Gravity").select_option("face")
    page.get_by_label("Face zoom").fill("0.6")
    page.get_by_label("Format").select_option("")


def float_attrs(page: Any, selector: str, names: list[str]) -> list[float]:
    return [float(page.get_attribute(selector, f"data-{name}")) for name in names]


def only_local(urls: list[str]) -> list[str]:
    """Requests that went anywhere but 127.0.0.1 (data: and blob: stay in the page)."""
    outside = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob"):
            continue
        if parsed.scheme not in ("http", "https") or parsed.hostname != "127.0.0.1":
            outside.append(url)
    return outside


def screen_box(page: Any, selector: str) -> dict[str, float]:
    box: dict[str, float] | None = page.locator(selector).bounding_box()
    if box is None:
        pytest.fail(f"{selector} is not displayed")
    return box


def test_face_crop_of_a_sample_is_drawn_where_the_json_says(
    page: Any, focal_server: Server, requests_seen: list[str], artifacts: Path
) -> None:
    base = focal_server.base
    page.goto(f"{base}/")
    wait_done(page)
    page.get_by_label("Sample image").select_option("astronaut.jpg")
    set_face_options(page)
    url = f"{base}/cdn-cgi/image/{FACE_OPTIONS}/astronaut.jpg"
    responses: list[Any] = []
    page.on("response", lambda response: responses.append(response))
    page.get_by_role("button", name="Transform").click()
    wait_done(page)
    fetched = [r for r in responses if r.url == url]
    assert fetched, f"the page did not fetch {url}"
    assert fetched[-1].status == 200
    # The page shows the fetched bytes through a blob: URL; that load holds the bytes it shows.
    shown_src = page.get_attribute("#result", "src")
    displayed = [r for r in responses if r.url == shown_src]
    assert displayed, "the result image was not loaded from the fetched bytes"
    page_bytes = displayed[-1].body()
    page.screenshot(path=str(artifacts / "playground-face.png"), full_page=True)

    # The URL shown is the image the page loaded, byte for byte, and has the requested size.
    assert page.input_value("#url") == url
    direct = httpx.get(url, timeout=60)
    assert direct.status_code == 200
    assert direct.content == page_bytes
    natural = page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [256, 256]

    # The overlay draws the json's faces, outer box, focal point and crop.
    described = httpx.get(url.replace(FACE_OPTIONS, FACE_OPTIONS + ",format=json"), timeout=60)
    description = described.json()
    if not description["faces"]:
        pytest.fail(
            "no face found in astronaut.jpg: is the face model installed (focal models fetch)? "
            f"health: {focal_server.health}; {environment_note()}; "
            f"fallback: {description['fallback']}"
        )
    assert description["fallback"] is None
    face = description["faces"][0]["box"]
    drawn = float_attrs(page, "#face-0", ["x1", "y1", "x2", "y2"])
    assert drawn == pytest.approx(face)
    assert page.locator("#faces rect.face").count() == len(description["faces"])
    assert float_attrs(page, "#outer-box", ["x1", "y1", "x2", "y2"]) == pytest.approx(
        description["outer_box"]
    )
    assert float_attrs(page, "#focal-point", ["x", "y"]) == pytest.approx(
        description["focal_point"]
    )
    crop = description["crop"]
    assert float_attrs(page, "#crop-rect", ["left", "top", "width", "height"]) == [
        crop["left"],
        crop["top"],
        crop["width"],
        crop["height"],
    ]

    # ... at the right place on screen, scaled from original pixels to the displayed size.
    original = description["original"]
    shown = screen_box(page, "#original")
    scale_x, scale_y = shown["width"] / original["width"], shown["height"] / original["height"]
    assert scale_x == pytest.approx(scale_y, rel=0.01)
    on_screen = screen_box(page, "#face-0")
    # The on-screen box includes the stroke (not scaled: vector-effect non-scaling-stroke).
    stroke = float(page.eval_on_selector("#face-0", "e => getComputedStyle(e).strokeWidth")[:-2])
    expected = {
        "x": shown["x"] + face[0] * scale_x - stroke / 2,
        "y": shown["y"] + face[1] * scale_y - stroke / 2,
        "width": (face[2] - face[0]) * scale_x + stroke,
        "height": (face[3] - face[1]) * scale_y + stroke,
    }
    for key, value in expected.items():
        assert on_screen[key] == pytest.approx(value, abs=PIXEL_TOLERANCE), key

    # The crop keeps the face, and the page says which gravity was used.
    assert crop["left"] <= face[0] and face[2] <= crop["left"] + crop["width"]
    assert crop["top"] <= face[1] and face[3] <= crop["top"] + crop["height"]
    assert "face" in page.inner_text("#summary")
    assert page.locator("#timings tbody tr").count() >= 1

    assert only_local(requests_seen) == []
    assert any(u.startswith(f"{base}/playground/original/astronaut.jpg") for u in requests_seen)


def test_non_image_upload_shows_a_clear_error(
    page: Any, focal_server: Server, requests_seen: list[str], tmp_path: Path, artifacts: Path
) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("Not a picture at all, only words in a file named .jpg\n" * 10)
    page.goto(f"{focal_server.base}/")
    wait_done(page)
    page.get_by_label("Or upload your own").set_input_files(str(fake))
    page.wait_for_selector(FAILED, state="attached")
    alert = page.get_by_role("alert")
    message = alert.inner_text()
    assert "415" in message and "not an image" in message
    assert alert.is_visible()
    page.screenshot(path=str(artifacts / "playground-upload-error.png"), full_page=True)
    assert only_local(requests_seen) == []


def test_upload_of_a_real_image_is_transformed_and_drawn(
    page: Any, focal_server: Server, requests_seen: list[str]
) -> None:
    page.goto(f"{focal_server.base}/")
    wait_done(page)
    set_face_options(page)
    page.get_by_label("Or upload your own").set_input_files(str(DEMO / "grace_hopper.jpg"))
    wait_done(page)
    assert "grace_hopper.jpg (uploaded)" in page.inner_text("#source")
    natural = page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [256, 256]
    assert page.get_attribute("#result", "src").startswith("data:image/jpeg;base64,")
    assert page.locator("#faces rect.face").count() >= 1
    description = page.inner_text("#json")
    assert '"gravity": "face"' in description
    assert page.input_value("#url").endswith(f"/cdn-cgi/image/{FACE_OPTIONS}/grace_hopper.jpg")
    posts = [u for u in requests_seen if "/playground/transform?" in u]
    assert posts, "the upload did not go to /playground/transform"
    assert only_local(requests_seen) == []


def test_readable_at_375_px_without_sideways_scrolling(
    browser: Any, focal_server: Server, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 812})
    try:
        page = context.new_page()
        page.goto(f"{focal_server.base}/")
        wait_done(page)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375
        for label in ("Width (px)", "Gravity", "Face zoom", "Format"):
            box = page.get_by_label(label).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, label
        page.screenshot(path=str(artifacts / "playground-375.png"), full_page=True)
    finally:
        context.close()


def test_keyboard_reaches_the_controls_with_a_visible_focus(
    page: Any, focal_server: Server
) -> None:
    page.goto(f"{focal_server.base}/")
    wait_done(page)
    page.get_by_label("Height (px)").focus()
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.id")
    assert focused == "fit"
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert outline[0] != "none" and outline[1] != "0px"
    page.get_by_label("Face zoom").focus()
    before = float(page.input_value("#zoom"))
    page.keyboard.press("ArrowRight")
    assert float(page.input_value("#zoom")) == pytest.approx(before + 0.05)
    assert page.inner_text("#zoom-value") == page.input_value("#zoom")
    assert page.get_by_role("button", name="Copy URL").is_enabled()


def test_redacting_faces_hides_the_face_in_the_result(
    page: Any, focal_server: Server, artifacts: Path
) -> None:
    base = focal_server.base
    page.goto(f"{base}/")
    wait_done(page)
    page.get_by_label("Sample image").select_option("astronaut.jpg")
    page.get_by_label("Width (px)").fill("256")
    page.get_by_label("Height (px)").fill("256")
    page.get_by_label("Fit").select_option("cover")
    page.get_by_label("Gravity").select_option("")
    page.get_by_label("Redact faces").select_option("pixelate")
    page.get_by_role("button", name="Transform").click()
    wait_done(page)
    options = "width=256,height=256,fit=cover,redact=faces,redact-style=pixelate"
    url = f"{base}/cdn-cgi/image/{options}/astronaut.jpg"
    assert page.input_value("#url") == url
    page.screenshot(path=str(artifacts / "playground-redact.png"), full_page=True)
    description = httpx.get(url.replace(options, options + ",format=json"), timeout=60).json()
    assert description["redacted"] == len(description["faces"]) >= 1
    hidden = httpx.get(url, timeout=60)
    plain = httpx.get(url.replace(",redact=faces,redact-style=pixelate", ""), timeout=60)
    assert hidden.status_code == plain.status_code == 200
    assert hidden.content != plain.content
