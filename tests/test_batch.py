"""`focal batch` on a local Ray (one for the whole module): the same crops as `focal transform`,
resumable, with a manifest and the failures and their reasons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips
from tests.conftest import FACEDATA

from focal.cli import main

pytestmark = pytest.mark.slow
FACE = "width=200,height=200,fit=cover,gravity=face,zoom=0.5"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten labelled photos with faces, as resized copies (the originals are read in place)."""
    manifest = [
        json.loads(line)
        for line in (FACEDATA / "manifest.jsonl").read_text().split("\n")
        if line.strip()
    ]
    with_faces = [m["path"] for m in manifest if m["faces"] and m["path"].endswith(".jpg")]
    folder = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sorted(with_faces)[:: max(1, len(with_faces) // 10)][:10]):
        image = pyvips.Image.thumbnail(str(FACEDATA / path), 800)
        (folder / f"photo{i}.jpg").write_bytes(bytes(image.jpegsave_buffer(Q=85)))
    return folder


def outputs(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name: p for p in folder.glob(f"*{suffix}")}


def test_batch_crops_as_transform_does(ray_local: None, photos: Path, tmp_path: Path) -> None:
    options = FACE + ",format=json"
    assert main(["transform", str(photos), "-o", str(tmp_path / "cli"), "--options", options]) == 0
    assert main(["batch", str(photos), str(tmp_path / "ray"), "--options", options]) == 0
    cli, ray = outputs(tmp_path / "cli", ".json"), outputs(tmp_path / "ray", ".json")
    assert len(cli) == 10 and cli.keys() == ray.keys()
    found = 0
    for name in cli:
        expected, got = json.loads(cli[name].read_text()), json.loads(ray[name].read_text())
        assert got["crop"] == expected["crop"], name
        assert got["faces"] == expected["faces"] and got["gravity"] == expected["gravity"], name
        found += len(got["faces"])
    assert found >= 10  # faces were found, so the crops depend on them


def test_batch_images_match_transform_pixel_for_pixel(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    options = FACE + ",format=png"
    assert main(["transform", str(photos), "-o", str(tmp_path / "cli"), "--options", options]) == 0
    assert main(["batch", str(photos), str(tmp_path / "ray"), "--options", options]) == 0
    cli, ray = outputs(tmp_path / "cli", ".png"), outputs(tmp_path / "ray", ".png")
    assert len(cli) == 10 and cli.keys() == ray.keys()
    for name in cli:
        a = pyvips.Image.new_from_file(str(cli[name]))
        b = pyvips.Image.new_from_file(str(ray[name]))
        assert (a.width, a.height) == (b.width, b.height) == (200, 200)
        assert (a - b).abs().max() == 0, name


def test_batch_resumes_and_lists_failures_in_the_manifest(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted(photos.glob("*.jpg"))[:3]:
        (src / path.name).write_bytes(path.read_bytes())
    (src / "broken.jpg").write_text("not an image\n" * 10)
    dest = tmp_path / "out"
    args = ["batch", str(src), str(dest), "--options", "width=64"]
    assert main(args) == 1
    first = [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()]
    done = {Path(r["source"]).name for r in first if r["status"] == "done"}
    assert done == {p.name for p in src.glob("photo*.jpg")}
    (failure,) = [r for r in first if r["status"] == "failed"]
    assert failure["source"].endswith("broken.jpg") and "415" in failure["reason"]
    assert all(r["width"] == 64 for r in first if r["status"] == "done")
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.glob("photo*.jpg")}
    assert main(args) == 1  # the finished outputs are skipped; the broken source fails again
    lines = (dest / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines[len(first) :]] == ["failed"]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in dest.glob("photo*.jpg")}
