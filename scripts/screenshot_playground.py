"""Take docs/screenshot.png: the playground showing astronaut.jpg with gravity=face.

    .venv/bin/python scripts/screenshot_playground.py [--out docs/screenshot.png]

Starts ``python -m focal serve`` on 127.0.0.1 (a free port, a temporary cache), drives Debian's
Chromium (/usr/bin/chromium) with Playwright, and stops the server. Needs the face model
(``focal models fetch``): without it there would be no face to show, and the script says so.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "focal" / "demo"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
WIDTH, HEIGHT = 1280, 1000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"focal serve exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("focal serve did not answer within 90 s")


def show_astronaut(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    page.wait_for_selector("body[data-state=done], body[data-state=error]", state="attached")
    page.get_by_label("Sample image").select_option("astronaut.jpg")
    page.get_by_label("Width (px)").fill("256")
    page.get_by_label("Height (px)").fill("256")
    page.get_by_label("Fit").select_option("cover")
    page.get_by_label("Gravity").select_option("face")
    page.get_by_label("Face zoom").fill("0.6")
    page.get_by_role("button", name="Transform").click()
    page.wait_for_selector("body[data-state=done], body[data-state=error]", state="attached")
    if page.get_attribute("body", "data-state") != "done":
        raise SystemExit(f"the page shows an error: {page.inner_text('#error')}")
    if page.locator("#faces rect.face").count() == 0:
        raise SystemExit("no face drawn: is the face model installed? (focal models fetch)")


def screenshot(base: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            show_astronaut(page, base)
            views = page.locator("#views").bounding_box()
            height = float(HEIGHT) if views is None else views["y"] + views["height"] + 16
            page.screenshot(
                path=str(out),
                clip={"x": 0.0, "y": 0.0, "width": float(WIDTH), "height": height},
                full_page=True,
            )
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="focal-shot-") as work:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "focal", "serve", "--root", str(DEMO)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--cache-dir", f"{work}/cache"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(base, process)
            screenshot(base, args.out)
        finally:
            process.terminate()
            process.wait(timeout=20)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
