"""`focal batch` on a local Ray (one for the whole module): the same crops as `focal transform`,
resumable, with a manifest and the failures and their reasons; between folders and between
prefixes of moto's S3-compatible server on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from tests.conftest import FACEDATA
from tests.images import DEMO
from tests.servers import S3_ENV, Child, free_port, start_moto

from focal.cli import main
from focal.commands.batch import safe_relative

pytestmark = pytest.mark.slow
FACE = "width=200,height=200,fit=cover,gravity=face,zoom=0.5"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray whose workers have moto's keys in their environment (obstore's credential
    chain reads it; the workers' environment is fixed when Ray starts)."""
    import ray

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


@pytest.mark.parametrize("side", [[], ["--detector-max-side", "512"]], ids=["1024", "512"])
def test_batch_crops_as_transform_does(
    ray_local: None, photos: Path, tmp_path: Path, side: list[str]
) -> None:
    options = FACE + ",format=json"
    job = ["--options", options, *side]
    assert main(["transform", str(photos), "-o", str(tmp_path / "cli"), *job]) == 0
    assert main(["batch", str(photos), str(tmp_path / "ray"), *job]) == 0
    cli, ray = outputs(tmp_path / "cli", ".json"), outputs(tmp_path / "ray", ".json")
    if side:  # the 800 px photos were detected on 512 px copies: other boxes than at 1024
        assert (
            main(["transform", str(photos), "-o", str(tmp_path / "full"), "--options", options])
            == 0
        )
        full = outputs(tmp_path / "full", ".json")
        faces = [json.loads(p.read_text())["faces"] for p in (cli[n] for n in sorted(cli))]
        assert faces != [json.loads(full[n].read_text())["faces"] for n in sorted(cli)]
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


def test_batch_redacts_an_animation_as_transform_does(ray_local: None, tmp_path: Path) -> None:
    # the astronaut moving across the canvas over three frames: every frame is detected on its own
    photo = pyvips.Image.thumbnail(str(DEMO / "astronaut.jpg"), 256)
    frames = [photo.embed(x, 0, 400, 256, extend="white") for x in (0, 70, 140)]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 256)
    src = tmp_path / "src"
    src.mkdir()
    (src / "moving.webp").write_bytes(bytes(strip.webpsave_buffer(lossless=True)))
    options = ["--options", "width=300,redact=faces,format=webp,quality=100"]
    assert main(["transform", str(src), "-o", str(tmp_path / "cli"), *options]) == 0
    assert main(["batch", str(src), str(tmp_path / "ray"), *options]) == 0
    expected = (tmp_path / "cli" / "moving.webp").read_bytes()
    assert (tmp_path / "ray" / "moving.webp").read_bytes() == expected
    plain = tmp_path / "plain"
    unredacted = ["--options", "width=300,format=webp,quality=100"]
    assert main(["transform", str(src), "-o", str(plain), *unredacted]) == 0
    assert pyvips.Image.new_from_buffer(expected, "", n=-1).get("n-pages") == 3
    assert (plain / "moving.webp").read_bytes() != expected
    described = ["--options", "width=300,redact=faces,format=json"]
    assert main(["batch", str(src), str(tmp_path / "json"), *described]) == 0
    assert json.loads((tmp_path / "json" / "moving.json").read_text())["redacted"] >= 3


def test_batch_trims_the_border_before_it_detects_as_transform_does(
    ray_local: None, tmp_path: Path
) -> None:
    photo = pyvips.Image.thumbnail(str(DEMO / "astronaut.jpg"), 256)
    src = tmp_path / "src"
    src.mkdir()
    framed = photo.embed(60, 40, 376, 336, extend="white")
    (src / "framed.png").write_bytes(bytes(framed.pngsave_buffer()))
    options = ["--options", "width=120,height=120,fit=cover,gravity=face,trim=border,format=json"]
    assert main(["transform", str(src), "-o", str(tmp_path / "cli"), *options]) == 0
    assert main(["batch", str(src), str(tmp_path / "ray"), *options]) == 0
    expected = json.loads((tmp_path / "cli" / "framed.json").read_text())
    got = json.loads((tmp_path / "ray" / "framed.json").read_text())
    assert expected["gravity"] == "face" and expected["faces"]
    assert {k: v for k, v in got.items() if k != "timings"} == {
        k: v for k, v in expected.items() if k != "timings"
    }


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


# ---- object storage: moto's S3 server on loopback ------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Child, Any]]:
    """moto's server with an ``images`` bucket, and a boto3 client of it to look with."""
    child = start_moto(tmp_path_factory.mktemp("moto"))
    import boto3

    admin = boto3.client("s3", endpoint_url=child.url, **BOTO_KEYS)
    admin.create_bucket(Bucket="images")
    yield child, admin
    child.stop()


BOTO_KEYS = {
    "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
    "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
    "region_name": S3_ENV["AWS_DEFAULT_REGION"],
}


def store_flags(moto: Child) -> list[str]:
    return ["--s3-endpoint-url", moto.url, "--s3-region", "us-east-1"]


def keys(admin: Any, prefix: str) -> dict[str, Any]:
    """key -> LastModified of every object under the prefix."""
    found = admin.list_objects_v2(Bucket="images", Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["LastModified"] for o in found}


def body(admin: Any, key: str) -> bytes:
    data: bytes = admin.get_object(Bucket="images", Key=key)["Body"].read()
    return data


def test_batch_between_prefixes_writes_transforms_bytes_and_resumes(
    ray_local: None,
    moto: tuple[Child, Any],
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    child, admin = moto
    local = tmp_path / "local"
    names = [p.name for p in sorted(photos.glob("*.jpg"))[:3]]
    for i, name in enumerate(names):  # one in a sub-folder: the layout is kept
        relative = f"sub/{name}" if i == 0 else name
        (local / relative).parent.mkdir(parents=True, exist_ok=True)
        (local / relative).write_bytes((photos / name).read_bytes())
        admin.put_object(Bucket="images", Key=f"in/{relative}", Body=(photos / name).read_bytes())
    admin.put_object(Bucket="images", Key="in/notes.txt", Body=b"not a source")
    assert main(["transform", str(local), "-o", str(tmp_path / "cli"), "--options", FACE]) == 0
    args = ["batch", "s3://images/in/", "s3://images/out/", "--options", FACE, *store_flags(child)]
    assert main(args) == 0
    written = keys(admin, "out/")
    expected = {
        p.relative_to(tmp_path / "cli").as_posix() for p in (tmp_path / "cli").rglob("*.jpg")
    }
    assert set(written) == {f"out/{name}" for name in expected} | {"out/manifest.jsonl"}
    for name in expected:
        assert body(admin, f"out/{name}") == (tmp_path / "cli" / name).read_bytes(), name
        head = admin.head_object(Bucket="images", Key=f"out/{name}")
        assert head["ContentType"] == "image/jpeg"
    records = [json.loads(line) for line in body(admin, "out/manifest.jsonl").splitlines()]
    assert sorted(r["output"] for r in records) == sorted(f"s3://images/out/{n}" for n in expected)
    assert all(r["status"] == "done" and r["source"].startswith("s3://images/in/") for r in records)
    capsys.readouterr()

    assert main(args) == 0  # everything is there: skipped from one listing, nothing rewritten
    assert "0 done, 3 skipped" in capsys.readouterr().err
    assert keys(admin, "out/") == written

    admin.put_object(Bucket="images", Key="in/added.jpg", Body=(photos / names[0]).read_bytes())
    assert main(args) == 0  # a new source: only it is done, and the manifest grows by its line
    assert "1 done, 3 skipped" in capsys.readouterr().err
    lines = body(admin, "out/manifest.jsonl").splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["output"] == "s3://images/out/added.jpg"


def test_bad_objects_are_reported_and_nothing_partial_is_written(
    ray_local: None,
    moto: tuple[Child, Any],
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    child, admin = moto
    good = sorted(photos.glob("*.jpg"))[0].read_bytes()
    admin.put_object(Bucket="images", Key="mixed/good.jpg", Body=good)
    admin.put_object(Bucket="images", Key="mixed/broken.jpg", Body=b"not an image\n" * 10)
    admin.put_object(Bucket="images", Key="mixed/huge.jpg", Body=good + b"\0" * (len(good) + 1))
    limit = ["--max-bytes", str(2 * len(good))]
    args = ["batch", "s3://images/mixed", "s3://images/mixed-out/", "--options", "width=64"]
    assert main([*args, *limit, *store_flags(child)]) == 1
    err = capsys.readouterr().err
    assert "1 done, 0 skipped (already there), 2 failed" in err
    assert "s3://images/mixed/broken.jpg" in err and "s3://images/mixed/huge.jpg" in err
    assert set(keys(admin, "mixed-out/")) == {"mixed-out/good.jpg", "mixed-out/manifest.jsonl"}
    manifest = [json.loads(x) for x in body(admin, "mixed-out/manifest.jsonl").splitlines()]
    reasons = {r["source"].rsplit("/", 1)[1]: r.get("reason", "") for r in manifest}
    assert "415" in reasons["broken.jpg"] and "413" in reasons["huge.jpg"]
    assert reasons["good.jpg"] == ""
    assert pyvips.Image.new_from_buffer(body(admin, "mixed-out/good.jpg"), "").width == 64

    # the same sources into a local folder: the same outputs and failures, written atomically
    dest = tmp_path / "out"
    assert (
        main(["batch", "s3://images/mixed/", str(dest), *args[3:], *limit, *store_flags(child)])
        == 1
    )
    assert sorted(p.name for p in dest.iterdir()) == ["good.jpg", "manifest.jsonl"]
    assert (dest / "good.jpg").read_bytes() == body(admin, "mixed-out/good.jpg")


def test_object_names_that_leave_the_prefix_are_refused(
    ray_local: None, moto: tuple[Child, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, admin = moto
    admin.put_object(Bucket="images", Key="odd/ok.jpg", Body=b"x")
    admin.put_object(Bucket="images", Key="odd/x/../../escape.jpg", Body=b"x")
    args = ["batch", "s3://images/odd/", str(tmp_path / "out"), *store_flags(child)]
    assert main(args) == 1  # the store client refuses to list such a key: nothing is done
    err = capsys.readouterr().err
    assert "cannot list" in err and "escape.jpg" in err
    assert not (tmp_path / "out").exists()
    # and were a listing to give one, it would never become a path or a key to write
    assert safe_relative("a/b.jpg") and safe_relative("b.jpg")
    for name in ("../b.jpg", "a/../../b.jpg", "/b.jpg", "a//b.jpg", "./b.jpg", "a\x00.jpg", ""):
        assert not safe_relative(name), name


def test_a_store_that_is_down_fails_the_listing(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["batch", "s3://images/in/", str(tmp_path / "out"), "--s3-read-timeout-s", "1"]
    assert main([*args, "--s3-endpoint-url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot list" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
