"""Checks of the crop-quality measure itself (the oracle, the kept rule, finding libvips' crop).

.venv/bin/pytest benchmarks/test_metric.py -q
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import pyvips

import crop_quality as cq
import harness
import loadgen


def test_largest_crop_takes_a_full_side() -> None:
    assert cq.largest_crop(1024, 678, (1, 1)) == (678, 678)
    assert cq.largest_crop(1024, 678, (16, 9)) == (1024, 576)
    assert cq.largest_crop(1024, 678, (4, 5)) == (542, 678)
    assert cq.largest_crop(600, 1000, (16, 9)) == (600, 338)


def test_a_face_is_kept_at_ninety_percent_inside() -> None:
    faces = np.array([[100, 0, 200, 50]], dtype=np.float64)
    assert cq.kept_mask(faces, cq.Crop(110, 0, 500, 100))[0]  # 90% inside
    assert not cq.kept_mask(faces, cq.Crop(111, 0, 500, 100))[0]  # 89% inside


def test_oracle_finds_the_placement_keeping_both_ends() -> None:
    # 1000 x 400 image, 1:1 crop of 400: faces at x 0..40 and 350..390 are both kept only for a
    # left edge of 0..4 (10% of the first face may be cut); ties go towards the centre.
    item = cq.Item("x", 1000, 400, ((0, 10, 40, 50), (350, 10, 390, 50), (900, 10, 950, 60)))
    crop = cq.oracle_crop(item, (400, 400))
    faces = np.asarray(item.faces, dtype=np.float64)
    assert int(cq.kept_mask(faces, crop).sum()) == 2
    assert crop.left == 4
    assert int(cq.kept_mask(faces, cq.center_crop(item, (400, 400))).sum()) == 1


def test_oracle_is_never_worse_than_any_placement() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes = []
        for _ in range(int(rng.integers(1, 8))):
            x, y = int(rng.integers(0, 560)), int(rng.integers(0, 300))
            boxes.append((x, y, x + int(rng.integers(16, 40)), y + int(rng.integers(16, 40))))
        item = cq.Item("x", 600, 340, tuple(boxes))
        faces = np.asarray(boxes, dtype=np.float64)
        best = int(cq.kept_mask(faces, cq.oracle_crop(item, (340, 340))).sum())
        for left in range(0, 261, 7):
            assert int(cq.kept_mask(faces, cq.Crop(left, 0, 340, 340)).sum()) <= best


def test_locate_finds_where_libvips_cut() -> None:
    image = pyvips.Image.new_from_file(str(harness.DEMO / "coffee.jpg"))  # 600 x 400
    source = image.numpy()
    for left in (0, 37, 200):
        cut = image.crop(left, 0, 400, 400).numpy()
        assert cq._locate(source, cut, 1) == left
    cut = image.crop(0, 55, 600, 300).numpy()
    assert cq._locate(source, cut, 0) == 55


def test_libvips_crop_matches_its_output() -> None:
    path = harness.DEMO / "coffee.jpg"
    crop = cq.libvips_crop(path, (400, 400))
    image = pyvips.Image.new_from_file(str(path))
    expected = image.smartcrop(400, 400, interesting="attention").numpy()
    assert np.array_equal(image.crop(crop.left, crop.top, 400, 400).numpy(), expected)


def test_countable_drops_invalid_and_small_faces() -> None:
    entry = {
        "faces": [[0, 0, 20, 20], [0, 0, 20, 15], [0, 0, 30, 30]],
        "face_attrs": [{"invalid": 0}, {"invalid": 0}, {"invalid": 1}],
    }
    assert cq.countable(entry) == ((0, 0, 20, 20),)


@pytest.mark.parametrize("values,q,expected", [([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([5.0], 99, 5.0)])
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert harness.percentile(values, q) == pytest.approx(expected)


def test_python_load_generator_counts_requests() -> None:
    server = harness.Server(
        "http.server",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"],
        0,
        "/",
        harness.WORK / "state" / "test-http" / "log",
    )
    port = harness.free_port()
    server.port = port
    server.cmd[-1] = str(port)
    server.cmd += ["--directory", str(harness.DEMO)]
    with harness.running(server):
        load = loadgen.run_python(server.base, ["/astronaut.jpg", "/nothing"], 2, count=10)
    assert load.requests == 10
    assert load.errors == 5  # every second path is missing (404)


def test_unlabelled_rows_are_skipped_not_counted_as_negatives() -> None:
    rows = [
        {"path": "a.jpg", "width": 100, "height": 100, "faces": None},
        {"path": "b.jpg", "width": 100, "height": 100, "faces": []},
        {"path": "c.jpg", "width": 100, "height": 100, "faces": [[10, 10, 40, 40]]},
    ]
    assert cq.countable(rows[0]) == ()
    assert [item.path for item in cq.items(rows)] == ["c.jpg"]


def test_steered_fallback_holds_the_most_candidates() -> None:
    path = harness.FACEDATA / "virtual.jpg"
    cq._ITEMS[path] = cq.Item("virtual.jpg", 300, 100, ((0, 0, 1, 1),))
    cq.CANDIDATES[path] = [(250.0, 10.0, 290.0, 50.0)]
    assert cq.candidate_fallback_crop(path, (100, 100)) == cq.Crop(190, 0, 100, 100)
    cq.CANDIDATES[path] = []
    assert cq.candidate_fallback_crop(path, (100, 100)) == cq.Crop(100, 0, 100, 100)


def _row(path: str, faces: int, square: dict[str, int]) -> dict[str, object]:
    """A result row whose 1:1 counts are ``square`` (faces kept per method), other aspects
    unscored."""
    kept: dict[str, dict[str, int]] = {aspect: {} for aspect in cq.ASPECTS}
    kept["1:1"] = square
    return {"path": path, "faces": faces, "kept": kept}


def test_flips_name_the_images_whose_outcome_changed_both_ways() -> None:
    now = [
        _row("a.jpg", 2, {"focal-face": 2, "focal-face-published": 1}),
        _row("b.jpg", 3, {"focal-face": 2, "focal-face-published": 3}),
        _row("c.jpg", 1, {"focal-face": 1, "focal-face-published": 1}),
    ]
    against_published = cq.flips(now, now, "focal-face", "focal-face-published")
    assert against_published["1:1"] == {"kept_to_lost": ["b.jpg"], "lost_to_kept": ["a.jpg"]}
    assert against_published["16:9"] == {"kept_to_lost": [], "lost_to_kept": []}
    before = [_row("a.jpg", 2, {"focal-face": 1}), _row("c.jpg", 1, {})]
    # b.jpg is not in the saved run and c.jpg was not scored there: neither counts
    assert cq.flips(now, before, "focal-face")["1:1"] == {
        "kept_to_lost": [],
        "lost_to_kept": ["a.jpg"],
    }
    report = cq.flip_report(now, {"images": before, "machine": {"date": "d", "git_commit": "x"}})
    assert report["against_saved"]["commit"] == "x"
    assert report["against_saved"]["methods"]["focal-face"]["1:1"]["lost_to_kept"] == ["a.jpg"]
