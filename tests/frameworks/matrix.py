"""The framework matrix: the URLs that web frameworks' own Cloudflare URL builders write (the real
npm packages, run with node by urls.mjs), requested from a real ``focal serve``.

    python tests/frameworks/matrix.py > /tmp/matrix.md     # the table in docs/frameworks.md

tests/test_frameworks.py runs the same and checks each row's status and size.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyvips

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEMO = ROOT / "src" / "focal" / "demo"
BROWSER_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"

if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests.live import Live, serve, static_origin  # noqa: E402


@dataclass(frozen=True)
class Row:
    framework: str
    case: str
    url: str
    status: int = 0
    content_type: str = ""
    size: tuple[int, int] | None = None
    error: str = ""

    @property
    def path(self) -> str:
        return "/" + self.url.split("/", 3)[3]


def framework_urls(base: str, origin: str) -> list[Row]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    if not (HERE / "node_modules").is_dir():
        raise RuntimeError("run npm ci in tests/frameworks first")
    out = subprocess.run(
        [node, str(HERE / "urls.mjs"), base, origin],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
    ).stdout
    return [Row(r["framework"], r["case"], r["url"]) for r in json.loads(out)]


def measure(row: Row) -> Row:
    response = httpx.get(row.url, headers={"Accept": BROWSER_ACCEPT}, timeout=60)
    ctype = response.headers.get("content-type", "")
    if response.status_code != 200:
        error = response.json().get("error", "") if ctype == "application/json" else ""
        return Row(row.framework, row.case, row.url, response.status_code, ctype, None, error)
    image = pyvips.Image.new_from_buffer(response.content, "")
    size = (image.width, image.height)
    return Row(row.framework, row.case, row.url, response.status_code, ctype, size)


@contextmanager
def servers(folder: Path) -> Iterator[tuple[Live, str]]:
    """(focal serve over the demo images, with the remote origin allowed; the origin's URL)."""
    origin_dir = folder / "origin"
    origin_dir.mkdir()
    shutil.copy(DEMO / "coffee.jpg", origin_dir / "coffee.jpg")
    root = folder / "root"
    root.mkdir()
    for name in ("coffee.jpg", "astronaut.jpg"):
        shutil.copy(DEMO / name, root / name)
    with static_origin(origin_dir) as origin:
        args = ["--root", str(root), "--no-face", "--no-cache-enabled", "--no-playground"]
        args += ["--remote-prefixes", origin + "/", "--allowed-networks", "127.0.0.0/8"]
        live = serve(folder, args)
        try:
            yield live, origin
        finally:
            live.stop()


def matrix(folder: Path) -> list[Row]:
    with servers(folder) as (live, origin):
        return [measure(row) for row in framework_urls(live.base, origin)]


def markdown(rows: list[Row]) -> str:
    lines = ["| framework | options asked for | URL path it wrote | status | result |"]
    lines.append("|---|---|---|---|---|")
    for row in rows:
        path = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", row.path)
        if row.status == 200:
            kind = row.content_type.removeprefix("image/")
            result = f"{row.size[0]}x{row.size[1]} {kind}" if row.size else kind
        else:
            result = row.error
        lines.append(f"| {row.framework} | {row.case} | `{path}` | {row.status} | {result} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        print(markdown(matrix(Path(folder))), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
