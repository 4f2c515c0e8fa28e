from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips
from tests import images
from tests.test_pipeline import FixedDetector

from focal.cli import main
from focal.commands import batch
from focal.commands import transform as command

ROOT = Path(__file__).resolve().parents[1]


def focal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "focal", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_transform_one_file_with_json_description(tmp_path: Path) -> None:
    out = tmp_path / "a.webp"
    done = focal(
        "transform",
        images.DEMO / "astronaut.jpg",
        "-o",
        out,
        "--options",
        "width=200,height=100,fit=cover",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    image = pyvips.Image.new_from_file(str(out))
    assert (image.width, image.height, image.get("vips-loader")) == (200, 100, "webpload")
    description = json.loads(done.stdout)
    assert description["width"] == 200 and description["original"]["width"] == 512


BAD_SOURCES = {
    "empty.jpg": b"",
    "truncated.jpg": images.header_only_jpeg(),
    "text.jpg": b"just some text, named like a picture\n",
    "bomb.png": images.png_bomb(),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("empty.jpg", "empty"),
        ("truncated.jpg", "truncated"),
        ("text.jpg", "not an image"),
        ("bomb.png", "megapixels"),
    ],
)
def test_bad_files_fail_clearly_and_leave_nothing(tmp_path: Path, name: str, words: str) -> None:
    src = tmp_path / name
    src.write_bytes(BAD_SOURCES[name])
    outdir = tmp_path / "out"
    outdir.mkdir()
    done = focal("transform", src, "-o", outdir / "result.jpg", "--options", "width=100")
    assert done.returncode == 1
    assert name in done.stderr and words in done.stderr
    assert list(outdir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("colour=red", "for option name but received 'colour'"),
        ("width=-5", "Expected an integer from 1 to 12000 for width but received '-5'"),
        ("zoom=2", "Expected a number from 0 to 1 for zoom but received '2'"),
        ("gravity=sideways", "for gravity but received 'sideways'"),
        ("width=100,zoom=0.5", "Expected gravity=face alongside it for zoom"),
        ("width=\u00b2", "for width but received"),
    ],
)
def test_bad_options_exit_2_and_leave_nothing(tmp_path: Path, options: str, message: str) -> None:
    done = focal(
        "transform", images.DEMO / "astronaut.jpg", "-o", tmp_path / "x.jpg", "--options", options
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_folder_run_lists_failures_goes_on_and_skips_done_work(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.jpg").write_bytes((images.DEMO / "astronaut.jpg").read_bytes())
    (src / "sub" / "b.png").write_bytes((images.DEMO / "logo.png").read_bytes())
    (src / "broken.jpg").write_bytes(images.header_only_jpeg())
    out = tmp_path / "out"
    first = focal("transform", src, "-o", out, "--options", "width=64,format=webp")
    assert first.returncode == 1
    assert "2 done, 0 skipped (already there), 1 failed" in first.stderr
    assert "broken.jpg" in first.stderr and "truncated" in first.stderr
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["a.webp", "sub/b.webp"]
    (src / "broken.jpg").unlink()
    second = focal("transform", src, "-o", out, "--options", "width=64,format=webp")
    assert second.returncode == 0
    assert "0 done, 2 skipped (already there), 0 failed" in second.stderr


def test_transform_refuses_a_file_over_max_bytes_before_reading_it(tmp_path: Path) -> None:
    out = tmp_path / "a.jpg"
    done = focal("transform", images.DEMO / "astronaut.jpg", "-o", out, "--max-bytes", "1000")
    assert done.returncode == 1 and "(status 413)" in done.stderr
    assert not out.exists()


def test_batch_reaches_object_storage_with_the_servers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from focal.cli import build_parser
    from focal.commands import batch
    from focal.server.objectstore import StoreSettings

    config = tmp_path / "focal.toml"
    config.write_text('s3_region = "eu-west-1"\ns3_read_timeout_s = 3.0\n')
    monkeypatch.setenv("FOCAL_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    argv = ["batch", "s3://b/in/", "out", "--config", str(config), "--s3-credentials", "boto3"]
    settings = batch.store_settings(build_parser().parse_args(argv))
    assert settings == StoreSettings("http://127.0.0.1:9", "eu-west-1", 2.0, 3.0, "boto3")


def test_batch_refuses_a_malformed_prefix(tmp_path: Path) -> None:
    done = focal("batch", "s3://Bad_Bucket/in/", tmp_path / "out")
    assert done.returncode == 2 and "not allowed" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--batch", "0", "expected a positive integer, received '0'"),
        ("--max-bytes", "ten", "expected a positive integer, received 'ten'"),
        ("--face-crop-threshold", "1", "expected a number from 0 to below 1, received '1'"),
        ("--face-crop-threshold", "nan", "expected a number from 0 to below 1, received 'nan'"),
        ("--batch-window-ms", "inf", "expected a number of at least 0, received 'inf'"),
        ("--batch-window-ms", "-1", "expected a number of at least 0, received '-1'"),
        (
            "--detector-max-side",
            "2048",
            "expected a whole number of pixels from 256 to 1024, received '2048'",
        ),
        ("--face-crop-side", "sideways", "invalid choice: 'sideways' (choose from"),
    ],
)
def test_a_bad_number_flag_is_refused_by_name_and_nothing_is_written(
    tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    out = tmp_path / "out.jpg"
    done = focal("transform", images.DEMO / "astronaut.jpg", "-o", out, f"{flag}={value}")
    assert done.returncode == 2
    assert f"argument {flag}: {expected}" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_detect_refuses_a_zoom_out_of_range_by_name_without_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "drawn.png"
    done = focal("detect", images.DEMO / "astronaut.jpg", "--zoom", "2", "--draw", out)
    assert done.returncode == 2
    assert "argument --zoom: Expected a number from 0 to 1 for zoom but received '2'" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_detect_refuses_a_score_threshold_out_of_range_by_name(tmp_path: Path) -> None:
    out = tmp_path / "drawn.png"
    args = ("detect", images.DEMO / "astronaut.jpg", "--draw", out, "--score-threshold")
    for value in ("1.5", "-0.1", "nan", "half"):
        done = focal(*args, value)
        assert done.returncode == 2, value
        expected = "argument --score-threshold: expected a number from 0 to below 1, received"
        assert expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_face_crop_side_flag_reaches_transform_and_batchs_first_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = FixedDetector([])  # records the size of every image it is shown
    monkeypatch.setattr(command, "open_detector", lambda config: detector)
    src = tmp_path / "wide.png"
    pyvips.Image.black(2048, 1366, bands=3).pngsave(str(src))
    options = "width=256,height=256,fit=cover,gravity=face"
    # the 256 px output of a 1366 px crop: twice its scale is 768 px on the long side
    for side, size in (("cap", (1024, 683)), ("output", (768, 512))):
        detector.seen.clear()
        out = tmp_path / f"{side}.jpg"
        args = ["transform", str(src), "-o", str(out), "--options", options]
        assert main([*args, "--face-crop-side", side]) == 0
        assert detector.seen == [size], side
    job = batch.Job(
        options_text=options,
        src=batch.Tree(folder=str(tmp_path)),
        dest=batch.Tree(folder=str(tmp_path / "out")),
        max_pixels=100_000_000,
        face_crop_side="output",
    )
    row = batch.prepare({"src": str(src), "rel": "wide.png"}, job)
    assert row["error"] == ""
    assert pickle.loads(row["input"]).page.shape[:2] == (512, 768)
