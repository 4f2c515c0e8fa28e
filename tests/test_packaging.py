"""The distribution: built as an sdist and a wheel, installed into a fresh virtual environment,
and serving a face crop from there (not from this checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from tests.live import serve

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "focal" / "demo"


def model_dir() -> Path:
    """Where the installed face model is (the lookup of docs/detector.md)."""
    override = os.environ.get("FOCAL_MODEL_DIR")
    return Path(override) if override else Path.home() / ".cache" / "focal" / "models"


def test_the_distribution_name_is_ours_and_the_docs_install_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "focal-images"  # "focal" on PyPI is an unrelated project
    assert project["scripts"] == {"focal": "focal.cli:main"}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if "pip install" in line and "focal" in line:
                assert "'focal[" not in line and "install focal" not in line, (doc.name, line)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_installs_into_a_fresh_venv_and_serves_a_face_crop(tmp_path: Path) -> None:
    if not (model_dir() / "manifest.json").exists():
        pytest.skip("the face model is not installed (focal models fetch)")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheels = sorted(dist.glob("focal_images-*.whl"))
    sdists = sorted(dist.glob("focal_images-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "focal/py.typed" in names and "focal/demo/astronaut.jpg" in names
    assert "focal/web/index.html" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheels[0]),
        ],
        check=True,
    )
    where = subprocess.run(
        [str(python), "-c", "import focal; print(focal.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout

    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(DEMO / "astronaut.jpg", root / "astronaut.jpg")
    live = serve(
        tmp_path,
        ["--root", str(root), "--no-cache-enabled", "--no-playground"],
        env={"FOCAL_MODEL_DIR": str(model_dir())},
        focal=[str(venv / "bin" / "focal")],
        cwd=tmp_path,
    )
    try:
        path = "/cdn-cgi/image/width=200,height=150,fit=cover,gravity=face/astronaut.jpg"
        response = httpx.get(live.url(path), timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["focal-gravity"] == "face"
        assert response.content[:2] == b"\xff\xd8"
    finally:
        live.stop()
