"""RetinaFace: anchors, decoding and NMS against hand-computed values; the detector on real faces
and real non-faces; the converted model against the original frozen graph."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from conftest import DEMO, FACEDATA, facedata_manifest
from focal import cli
from focal.detection import RGBImage
from focal.errors import ModelMissingError
from focal.face import detector as det
from focal.face import models
from focal.face import retinaface as rf
from focal.face import sessions as rt
from focal.face.evaluation import box_iou
from model_fixtures import require_model

WIDER = "wider_face/WIDER_val/images"
EQUIVALENCE_WIDER = [
    f"{WIDER}/0--Parade/0_Parade_Parade_0_470.jpg",
    f"{WIDER}/0--Parade/0_Parade_Parade_0_873.jpg",
    f"{WIDER}/0--Parade/0_Parade_Parade_0_459.jpg",
    f"{WIDER}/13--Interview/13_Interview_Interview_2_People_Visible_13_254.jpg",
    f"{WIDER}/13--Interview/13_Interview_Interview_On_Location_13_861.jpg",
    f"{WIDER}/13--Interview/13_Interview_Interview_Sequences_13_35.jpg",
]


# --- anchors ----------------------------------------------------------------------------------


def test_anchor_count_and_order_for_a_64_pixel_square() -> None:
    priors = rf.anchors(64, 64)
    # strides 8, 16, 32 -> 8x8, 4x4, 2x2 cells, two anchors each
    assert priors.shape == (2 * (64 + 16 + 4), 4)
    np.testing.assert_array_equal(priors[0], [4, 4, 16, 16])
    np.testing.assert_array_equal(priors[1], [4, 4, 32, 32])
    np.testing.assert_array_equal(priors[2], [12, 4, 16, 16])  # next cell to the right
    np.testing.assert_array_equal(priors[16], [4, 12, 16, 16])  # next row
    np.testing.assert_array_equal(priors[128], [8, 8, 64, 64])  # first cell of stride 16
    np.testing.assert_array_equal(priors[-1], [48, 48, 512, 512])  # last cell of stride 32


def test_anchors_follow_a_non_square_grid() -> None:
    priors = rf.anchors(32, 96)
    assert priors.shape == (2 * (4 * 12 + 2 * 6 + 1 * 3), 4)
    np.testing.assert_array_equal(priors[2 * 11], [92, 4, 16, 16])  # last column, first row
    np.testing.assert_array_equal(priors[2 * 12], [4, 12, 16, 16])


# --- decoding ---------------------------------------------------------------------------------


def test_box_decoding_by_hand() -> None:
    prior = np.array([[100, 50, 20, 20]], dtype=np.float32)
    # centre moves by delta * 0.1 * size; size multiplies by exp(delta * 0.2)
    deltas = np.array([[1.0, -1.0, math.log(2) / 0.2, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(rf.decode_boxes(deltas, prior), [[82, 38, 122, 58]], rtol=1e-6)


def test_landmark_decoding_by_hand() -> None:
    prior = np.array([[100, 50, 20, 40]], dtype=np.float32)
    deltas = np.array([[0, 0, 1, 1, -1, 0, 0, -1, 2, 2]], dtype=np.float32)
    expected = [[[100, 50], [102, 54], [98, 50], [100, 46], [104, 58]]]
    np.testing.assert_allclose(rf.decode_landmarks(deltas, prior), expected, rtol=1e-6)


# --- IoU and NMS ------------------------------------------------------------------------------


def test_iou_by_hand() -> None:
    box = np.array([0, 0, 10, 10], dtype=np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 9]], "f4")
    np.testing.assert_allclose(rf.iou(box, others), [1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # score 0.8
            [1, 0, 11, 10],  # IoU 0.818 with the first: suppressed by the better one
            [0, 0, 10, 10.0],
            [50, 50, 60, 60],
        ],
        dtype=np.float32,
    )
    scores = np.array([0.8, 0.95, 0.7, 0.6], dtype=np.float32)
    assert rf.nms(boxes, scores, 0.4).tolist() == [1, 3]


def test_nms_drops_only_above_the_iou_threshold() -> None:
    # two 10 x 10 boxes overlapping by 4 x 10: IoU = 40 / (100 + 100 - 40) = 0.25
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert rf.nms(boxes, scores, 0.25).tolist() == [0, 1]  # IoU 0.25 is not above 0.25
    assert rf.nms(boxes, scores, 0.2).tolist() == [0]


def test_nms_of_nothing() -> None:
    assert rf.nms(np.zeros((0, 4), "f4"), np.zeros(0, "f4"), 0.4).tolist() == []


def test_postprocess_applies_the_score_threshold_then_decodes() -> None:
    priors = np.array([[10, 10, 16, 16], [30, 10, 16, 16], [50, 10, 16, 16]], dtype=np.float32)
    outputs = rf.RawOutputs(
        boxes=np.zeros((1, 3, 4), dtype=np.float32),
        landmarks=np.zeros((1, 3, 10), dtype=np.float32),
        scores=np.array([[0.2, 0.9, 0.55]], dtype=np.float32),
    )
    found = rf.postprocess(outputs, 0, priors, rf.Settings(score_threshold=0.5, nms_iou=0.4))
    np.testing.assert_allclose(found.scores, [0.9, 0.55])
    np.testing.assert_allclose(found.boxes, [[22, 2, 38, 18], [42, 2, 58, 18]])
    np.testing.assert_allclose(found.landmarks[0], [[30, 10]] * 5)
    strict = rf.postprocess(outputs, 0, priors, rf.Settings(score_threshold=0.6))
    assert strict.scores.tolist() == pytest.approx([0.9])


# --- preprocessing and sizes ------------------------------------------------------------------


def test_preprocess_pads_the_batch_to_its_largest_image_rounded_to_32() -> None:
    small = np.full((20, 40, 3), 7, dtype=np.uint8)
    tall = np.full((70, 30, 3), 9, dtype=np.uint8)
    batch = rf.preprocess([small, tall])
    assert batch.shape == (2, 96, 64, 3)
    assert batch.dtype == np.float32
    assert (
        (batch[0, :20, :40] == 7).all() and batch[0, 20:].sum() == 0 and batch[0, :, 40:].sum() == 0
    )
    assert (batch[1, :70, :30] == 9).all() and batch[1, 70:].sum() == 0


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((2048, 2048), (1024, 1024)),
        ((125, 2000), (64, 1024)),
        ((800, 600), (800, 600)),
        ((1024, 1024), (1024, 1024)),
        ((3000, 1000), (1024, 341)),
    ],
)
def test_inference_size_caps_the_long_side_at_1024(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert rf.inference_size(*size) == expected


# --- the detector over a stand-in session (coordinates, batching) -----------------------------


class OneFaceSession:
    """Answers a face (score 0.9, zero deltas) at the first stride-8 anchor of each image."""

    runtime = "fake"
    precision = "fp32"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, batch: rf.FloatArray) -> rf.RawOutputs:
        self.shapes.append(batch.shape)
        count = len(rf.anchors(batch.shape[1], batch.shape[2]))
        scores = np.zeros((batch.shape[0], count), dtype=np.float32)
        scores[:, 0] = 0.9
        return rf.RawOutputs(
            boxes=np.zeros((batch.shape[0], count, 4), dtype=np.float32),
            landmarks=np.zeros((batch.shape[0], count, 10), dtype=np.float32),
            scores=scores,
        )


def test_faces_come_back_in_each_inputs_own_coordinates() -> None:
    session = OneFaceSession()
    detector = det.RetinaFace(session, "0" * 64)
    big = np.zeros((2000, 4000, 3), dtype=np.uint8)  # detected at 1024 x 512
    small = np.zeros((100, 50, 3), dtype=np.uint8)
    faces = detector.detect([big, small])
    assert session.shapes == [(2, 512, 1024, 3)]  # one batch, padded to the largest
    # the anchor box (4 +- 8) scaled by 4000 / 1024 and 2000 / 512 = 3.90625 on both axes
    assert faces[0][0].box == pytest.approx(
        (-4 * 3.90625, -4 * 3.90625, 12 * 3.90625, 12 * 3.90625)
    )
    assert faces[0][0].landmarks[0] == pytest.approx((4 * 3.90625, 4 * 3.90625))
    assert faces[1][0].box == pytest.approx((-4, -4, 12, 12))
    assert faces[1][0].score == pytest.approx(0.9)


def test_no_images_no_inference() -> None:
    session = OneFaceSession()
    assert det.RetinaFace(session, "0" * 64).detect([]) == []
    assert session.shapes == []


def test_model_id_names_the_model_and_the_thresholds() -> None:
    detector = det.RetinaFace(OneFaceSession(), "ab" * 32, rf.Settings(0.6, 0.3))
    assert detector.model_id == "retinaface-mnv2:abababababababab:s0.6:n0.3"


def test_loader_without_a_model_raises_model_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="run `focal models fetch`"):
        rt.load_detector(tmp_path)


def test_detect_command_without_a_model_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["detect", str(DEMO / "astronaut.jpg"), "--model-dir", str(tmp_path)])
    assert code == 3
    assert "focal models fetch" in capsys.readouterr().err


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def face_model_dir() -> Path:
    return require_model().directory


@pytest.fixture(scope="session")
def detector(face_model_dir: Path) -> det.RetinaFace:
    return rt.load_detector(face_model_dir)


@pytest.fixture(scope="session")
def reference(face_model_dir: Path) -> rt.FrozenGraphReference:
    return rt.FrozenGraphReference(models.require(face_model_dir).graph_path)


def manifest_rows() -> dict[str, dict[str, Any]]:
    return {row["path"]: row for row in facedata_manifest()}


def singles() -> list[str]:
    return [p for p, row in manifest_rows().items() if row["dataset"] == "singles"]


@pytest.mark.slow
@pytest.mark.parametrize("path", singles() + EQUIVALENCE_WIDER)
def test_converted_model_matches_the_original_frozen_graph(
    path: str, face_model_dir: Path, reference: rt.FrozenGraphReference
) -> None:
    """focal's ONNX model + numpy decode/NMS against the original graph (with its own in-graph
    decode and NMS) run by OpenVINO's TensorFlow frontend."""
    image, _ = det.load_inference_image(FACEDATA / path)
    session = rt.open_session(models.require(face_model_dir).model_path, "onnxruntime")
    ours = det.RetinaFace(session, "0" * 64)
    found = ours.detect_prepared([image])[0]
    batch = rf.preprocess([image])
    rows = reference.run(batch)
    height, width = batch.shape[1:3]
    rows = rows[np.argsort(-rows[:, 15], kind="stable")]
    assert len(found.scores) == len(rows)
    assert len(rows) > 0 or path.startswith("negatives")
    for box, score, row in zip(found.boxes, found.scores, rows, strict=True):
        theirs = row[:4] * [width, height, width, height]
        assert box_iou(box.tolist(), theirs.tolist()) >= 0.999
        assert abs(float(score) - float(row[15])) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    "image", [DEMO / "astronaut.jpg", DEMO / "grace_hopper.jpg"], ids=["astronaut", "hopper"]
)
def test_one_face_in_each_demo_portrait(image: Path, detector: det.RetinaFace) -> None:
    result = det.detect_file(detector, image)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.score > 0.99
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    x1, y1, x2, y2 = face.box
    assert all(x1 < x < x2 and y1 < y < y2 for x, y in face.landmarks)
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.slow
@pytest.mark.parametrize("path", singles())
def test_labelled_portraits(path: str, detector: det.RetinaFace) -> None:
    row = manifest_rows()[path]
    faces = det.detect_file(detector, FACEDATA / path).faces
    assert len(faces) == len(row["faces"])
    for label in row["faces"]:
        assert max(box_iou(f.box, label) for f in faces) >= 0.5


def clear_faces(row: dict[str, Any]) -> list[list[int]]:
    """WIDER faces anyone would call clearly visible: valid, unblurred, unoccluded, typical
    pose, at least 40 px wide, not cut by the image border."""
    keep = []
    for box, attrs in zip(row["faces"], row["face_attrs"], strict=True):
        x1, y1, x2, y2 = box
        clear = not attrs["invalid"] and attrs["blur"] == 0 and attrs["occlusion"] == 0
        inside = x1 > 0 and y1 > 0 and x2 < row["width"] and y2 < row["height"]
        if clear and attrs["pose"] == 0 and x2 - x1 >= 40 and inside:
            keep.append(box)
    return keep


def wider_with_clear_faces() -> list[str]:
    return [p for p, row in manifest_rows().items() if p.startswith("wider") and clear_faces(row)]


@pytest.mark.slow
def test_every_clearly_visible_wider_face_is_found(detector: det.RetinaFace) -> None:
    paths = wider_with_clear_faces()
    assert len(paths) >= 50
    missed = []
    for path in paths:
        row = manifest_rows()[path]
        faces = det.detect_file(detector, FACEDATA / path).faces
        for label in clear_faces(row):
            best = max((box_iou(f.box, label) for f in faces), default=0.0)
            if best < 0.5:
                missed.append((path, label, round(best, 2)))
    assert missed == []


def clear_negatives() -> list[str]:
    return [
        p
        for p, row in manifest_rows().items()
        if row["dataset"] == "negatives" and not any("ambiguous" in t for t in row["tags"])
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", clear_negatives())
def test_no_face_in_images_without_faces(path: str, detector: det.RetinaFace) -> None:
    assert det.detect_file(detector, FACEDATA / path).faces == []


def load_rgb(path: Path) -> RGBImage:
    image, _ = det.load_inference_image(path)
    return image


@pytest.mark.slow
def test_batch_results_match_single_results(detector: det.RetinaFace) -> None:
    a = load_rgb(DEMO / "astronaut.jpg")
    b = load_rgb(FACEDATA / EQUIVALENCE_WIDER[4])  # 699 x 1024, four faces
    together = detector.detect([a, b])
    apart = detector.detect([a]) + detector.detect([b])
    for batch_faces, single_faces in zip(together, apart, strict=True):
        assert len(batch_faces) == len(single_faces) > 0
        for face in single_faces:
            assert max(box_iou(f.box, face.box) for f in batch_faces) >= 0.98


def enlarged(path: Path, factor: int) -> RGBImage:
    return det._to_numpy(pyvips.Image.new_from_file(str(path)).resize(factor, kernel="linear"))


@pytest.mark.slow
def test_large_inputs_are_detected_at_the_cap_and_mapped_back(detector: det.RetinaFace) -> None:
    original = load_rgb(DEMO / "astronaut.jpg")  # 512 x 512
    (face,) = detector.detect([original])[0]
    (big,) = detector.detect([enlarged(DEMO / "astronaut.jpg", 4)])[0]  # 2048 x 2048
    assert box_iou(big.box, [v * 4 for v in face.box]) >= 0.9


@pytest.fixture
def rotated_jpeg(tmp_path: Path) -> Iterator[Path]:
    """The astronaut stored sideways with EXIF orientation 6 (display: rotate 90 clockwise)."""
    image = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg")).rot270().copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    path = tmp_path / "sideways.jpg"
    image.write_to_file(str(path))
    yield path


@pytest.mark.slow
def test_exif_orientation_is_applied(detector: det.RetinaFace, rotated_jpeg: Path) -> None:
    upright = det.detect_file(detector, DEMO / "astronaut.jpg").faces
    turned = det.detect_file(detector, rotated_jpeg)
    assert (turned.width, turned.height) == (512, 512)
    assert len(turned.faces) == 1
    assert box_iou(turned.faces[0].box, upright[0].box) >= 0.9


@pytest.mark.slow
def test_detect_command_json_and_drawing(
    face_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "drawn.png"
    image = FACEDATA / EQUIVALENCE_WIDER[2]  # 1024 x 1261: detected at 832 x 1024
    code = cli.main(["detect", str(image), "--json", "--draw", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["width"], summary["height"]) == (1024, 1261)
    assert summary["inference"] == {"width": 832, "height": 1024}
    assert len(summary["faces"]) >= 4
    boxes = [f["box"] for f in summary["faces"]]
    outer = summary["outer_box"]
    assert outer == [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    assert summary["focal_point"] == pytest.approx(
        [(outer[0] + outer[2]) / 2, (outer[1] + outer[3]) / 2], abs=0.01
    )
    assert set(summary["faces"][0]["landmarks"]) == {
        "left_eye",
        "right_eye",
        "nose",
        "mouth_left",
        "mouth_right",
    }
    drawn = pyvips.Image.new_from_file(str(out))
    assert (drawn.width, drawn.height) == (1024, 1261)
    original = pyvips.Image.new_from_file(str(image))
    assert (drawn - original[:3]).abs().max() > 0  # something was drawn


def test_mirror_flips_boxes_and_swaps_left_and_right_landmarks() -> None:
    found = rf.Detections(
        boxes=np.array([[10, 20, 40, 60]], dtype=np.float32),
        landmarks=np.array([[[15, 30], [35, 30], [25, 40], [18, 50], [32, 50]]], dtype=np.float32),
        scores=np.array([0.9], dtype=np.float32),
    )
    back = rf.mirror(found, 100)
    assert back.boxes.tolist() == [[60, 20, 90, 60]]
    # the mirrored image's left eye (x 15) is the right eye of the original, at x 85
    assert back.landmarks.tolist() == [[[65, 30], [85, 30], [75, 40], [68, 50], [82, 50]]]
    assert rf.mirror(rf.mirror(found, 100), 100).boxes.tolist() == found.boxes.tolist()


def test_model_id_says_when_the_mirrored_pass_is_on() -> None:
    assert rf.model_id("ab" * 32, rf.Settings(flip=True)).endswith(":s0.5:n0.4:flip")


@pytest.mark.slow
def test_onnx_runtime_threads_do_not_spin_between_runs(detector: det.RetinaFace) -> None:
    assert isinstance(detector.session, rt.OnnxRuntimeSession)
    options = detector.session._session.get_session_options()
    assert options.get_session_config_entry(rt.SPINNING) == "0"


@pytest.mark.slow
@pytest.mark.parametrize("path", singles())
def test_a_smaller_detection_side_finds_each_labelled_portrait(
    path: str, detector: det.RetinaFace
) -> None:
    small = det.RetinaFace(detector.session, "test", rf.Settings(max_side=256))
    image, _ = det.load_inference_image(FACEDATA / path)
    assert max(image.shape[:2]) > 256  # so the smaller side is a smaller copy
    (faces,) = small.detect([image])
    (plain,) = detector.detect([image])
    assert len(faces) == len(plain) == 1
    assert box_iou(faces[0].box, plain[0].box) > 0.8


@pytest.mark.slow
def test_candidates_come_from_the_same_pass_below_the_faces(detector: det.RetinaFace) -> None:
    image, _ = det.load_inference_image(FACEDATA / EQUIVALENCE_WIDER[0])
    (faces,) = detector.detect([image])
    ((crop_faces, candidates),) = detector.detect_with_candidates([image])
    crop = detector.settings.crop_threshold
    assert {f.box for f in faces} <= {f.box for f in crop_faces}  # 0.5 faces among crop faces
    assert all(f.score > crop for f in crop_faces)
    assert candidates and all(0.05 < f.score <= crop for f in candidates)
    strict = det.RetinaFace(
        detector.session, "test", rf.Settings(crop_threshold=rf.Settings.score_threshold)
    )
    ((same, _),) = strict.detect_with_candidates([image])
    assert [f.box for f in same] == [f.box for f in faces]


@pytest.mark.slow
@pytest.mark.parametrize("path", singles())
def test_the_mirrored_pass_finds_each_labelled_portrait_once(
    path: str, detector: det.RetinaFace
) -> None:
    flipped = det.RetinaFace(detector.session, "test", rf.Settings(flip=True))
    image, _ = det.load_inference_image(FACEDATA / path)
    (faces,) = flipped.detect([image])
    (plain,) = detector.detect([image])
    assert len(faces) == len(plain) == 1
    assert box_iou(faces[0].box, plain[0].box) > 0.8


class RecordingShapes:
    """A session that finds nothing and records the (height, width) of every batch it runs."""

    precision = "fp32"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def run(self, batch: Any) -> rf.RawOutputs:
        height, width = int(batch.shape[1]), int(batch.shape[2])
        self.shapes.append((height, width))
        anchors = len(rf.anchors(height, width))
        return rf.RawOutputs(
            boxes=np.zeros((len(batch), anchors, 4), np.float32),
            landmarks=np.zeros((len(batch), anchors, 10), np.float32),
            scores=np.zeros((len(batch), anchors), np.float32),
        )


def test_model_id_names_a_detection_side_below_the_cap() -> None:
    assert rf.model_id("ab" * 32, rf.Settings(max_side=768)).endswith(":s0.5:n0.4:m768")
    assert ":m" not in rf.model_id("ab" * 32, rf.Settings())


def test_the_detector_fits_images_to_its_own_side() -> None:
    session = RecordingShapes()
    detector = det.RetinaFace(session, "test", rf.Settings(max_side=512))
    assert detector.max_side == 512
    for shape in ((1000, 800, 3), (300, 200, 3)):
        assert detector.detect([np.zeros(shape, np.uint8)]) == [[]]
    # 1000x800 fitted to 512 (410 wide, padded to 416); 300x200 as is (padded to 320x224)
    assert session.shapes == [(512, 416), (320, 224)]


def test_model_id_names_a_crop_threshold_other_than_the_default() -> None:
    assert rf.model_id("ab" * 32, rf.Settings(crop_threshold=0.4)).endswith(":s0.5:n0.4:c0.4")
    assert rf.model_id("ab" * 32, rf.Settings()).endswith(":s0.5:n0.4")


class RecordingSession:
    """A session that answers each image's batch position in its outputs and records the size
    of every run."""

    precision = "fp32"

    def __init__(self) -> None:
        self.runs: list[int] = []

    def run(self, batch: Any) -> rf.RawOutputs:
        self.runs.append(len(batch))
        marks = batch[:, 0, 0, 0].astype(np.float32)  # each test image carries its index there
        return rf.RawOutputs(
            boxes=np.repeat(marks[:, None, None], 4, axis=2),
            landmarks=np.repeat(marks[:, None, None], 10, axis=2),
            scores=marks[:, None],
        )


@pytest.mark.parametrize(
    ("side", "count", "runs"),
    [(1024, 3, [1, 1, 1]), (512, 8, [4, 4]), (512, 3, [3]), (256, 5, [5])],
)
def test_a_batch_runs_in_pieces_of_at_most_one_capped_image(
    side: int, count: int, runs: list[int]
) -> None:
    session = RecordingSession()
    batch = np.zeros((count, side, side, 3), np.float32)
    batch[:, 0, 0, 0] = np.arange(count)
    outputs = det.run_in_pieces(session, batch)
    assert session.runs == runs
    assert outputs.scores[:, 0].tolist() == list(range(count))  # joined in batch order
    assert outputs.boxes.shape == (count, 1, 4) and outputs.landmarks.shape == (count, 1, 10)
