"""Web frameworks' own Cloudflare URL builders (unpic, Nuxt Image, the Next.js loader of Next's
docs; the real npm packages in tests/frameworks, run with node) against a real focal serve: each
URL's status and size, and the matrix in docs/frameworks.md is the one they give today."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.frameworks import matrix

pytestmark = pytest.mark.slow  # real servers on loopback

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "frameworks.md"
HERE = ROOT / "tests" / "frameworks"

# (framework, case) -> (status, (width, height) or None, content type)
EXPECTED: dict[tuple[str, str], tuple[int, tuple[int, int] | None, str]] = {
    ("unpic", "width=300, height=200"): (200, (300, 200), "image/avif"),
    ("unpic", "width=300, quality=60"): (200, (300, 200), "image/avif"),
    ("unpic", "remote source, width=250"): (200, (250, 167), "image/avif"),
    ("nuxt", "width=300, height=200, fit=cover, quality=70, format=webp"): (
        200,
        (300, 200),
        "image/webp",
    ),
    ("nuxt", "width=300, height=300, fit=fill"): (200, (300, 200), "image/jpeg"),
    ("nuxt", "width=300, height=300, fit=inside, background=#ff0000"): (
        200,
        (300, 300),
        "image/jpeg",
    ),
    ("nuxt", "width=300, height=300, fit=outside"): (200, (300, 300), "image/jpeg"),
    ("nuxt", "width=200, height=200, fit=cover, gravity=auto"): (200, (200, 200), "image/jpeg"),
    ("nuxt", "remote source, width=250"): (200, (250, 167), "image/jpeg"),
    ("next", "src=/coffee.jpg, width=640, quality=75"): (200, (600, 400), "image/avif"),
    ("next", "src=/coffee.jpg, width=384 (no quality)"): (200, (384, 256), "image/avif"),
    ("next", "remote src, width=256"): (200, (256, 171), "image/avif"),
    ("next", "src=/coffee.jpg, loader without normalizeSrc"): (403, None, "application/json"),
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[matrix.Row]:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node and npm are not installed")
    if not (HERE / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--omit=peer"], cwd=HERE, check=True)
    return matrix.matrix(tmp_path_factory.mktemp("frameworks"))


def test_every_framework_url_gets_the_expected_answer(rows: list[matrix.Row]) -> None:
    got = {(row.framework, row.case): (row.status, row.size, row.content_type) for row in rows}
    assert got == EXPECTED
    refused = next(row for row in rows if row.status != 200)
    assert "starts with a slash" in refused.error and "docs/frameworks.md" in refused.error


def test_the_urls_are_the_frameworks_own(rows: list[matrix.Row]) -> None:
    by_case = {(row.framework, row.case): row.path for row in rows}
    fill = by_case[("nuxt", "width=300, height=300, fit=inside, background=#ff0000")]
    assert fill.startswith("/cdn-cgi/image/w=300,h=300,fit=pad,background=%23ff0000/")
    assert by_case[("unpic", "width=300, height=200")].startswith(
        "/cdn-cgi/image/width=300,height=200,f=auto,fit=cover/"
    )
    assert "//coffee.jpg" in by_case[("next", "src=/coffee.jpg, loader without normalizeSrc")]


def test_docs_show_todays_matrix_and_the_loader_that_was_tested(rows: list[matrix.Row]) -> None:
    docs = DOCS.read_text()
    assert matrix.markdown(rows) in docs, "regenerate: python tests/frameworks/matrix.py"
    loader = (HERE / "next-loader.mjs").read_text()
    body = loader[loader.index("const normalizeSrc") :]
    assert body.replace("export default function", "export default function") in docs
