"""The WIDER FACE protocol (focal.face.evaluation) on hand-built cases, against a literal
transcription of the official Python evaluation, and on the official ground-truth files."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import facedata_manifest
from focal import cli
from focal.commands import eval as eval_command
from focal.detection import Face
from focal.errors import FocalError
from focal.face import detector as det
from focal.face import evaluation as ev
from focal.face import retinaface
from focal.face import sessions as rt
from model_fixtures import require_model, require_model_dir

# Three counted faces and one face outside the subset, far apart.
GT = np.array(
    [
        [0, 0, 10, 10],  # counted: found by A
        [100, 0, 110, 10],  # counted: found by D
        [200, 0, 210, 10],  # counted: never found
        [300, 0, 310, 10],  # not in the subset: C lands on it
    ],
    dtype=np.float64,
)
EASY = np.array([True, True, True, False])
PREDS = np.array(
    [
        [0, 0, 10, 10, 0.9],  # A: true positive
        [500, 500, 510, 510, 0.8],  # B: false positive (no face there)
        [300, 0, 310, 10, 0.7],  # C: on the ignored face
        [100, 0, 110, 10, 0.6],  # D: true positive
    ],
    dtype=np.float64,
)


def truth(keep: np.ndarray, invalid: np.ndarray | None = None) -> ev.ImageTruth:
    flags = np.zeros(len(GT), dtype=bool) if invalid is None else invalid
    return ev.ImageTruth("hand", GT, flags, {"easy": keep})


def test_hand_built_ap_is_five_ninths() -> None:
    """Scores 0.9, 0.8, 0.7, 0.6 normalise by (s - 0.6) / 0.3 to A=1, B=2/3, C=1/3, D=0.

    Thresholds 1 - (k+1)/1000 go from 0.999 down to 0:
      t in (2/3, 0.999]: {A}         proposals 1, recalled 1 -> P = 1,   R = 1/3
      t in (1/3, 2/3]:   {A,B}       proposals 2, recalled 1 -> P = 1/2, R = 1/3
      t in (0, 1/3]:     {A,B,C}     C is ignored: same       -> P = 1/2, R = 1/3
      t = 0:             {A,B,C,D}   proposals 3, recalled 2 -> P = 2/3, R = 2/3
    With sentinels, the precision envelope is 1 up to R = 1/3, then 2/3 up to R = 2/3, then 0:
      AP = (1/3 - 0) * 1 + (2/3 - 1/3) * 2/3 + (1 - 2/3) * 0 = 1/3 + 2/9 = 5/9.
    Were C a false positive, precision at t = 0 would be 2/4 and AP = 1/3 + 1/6 = 1/2."""
    curve = ev.pr_curve([PREDS], [truth(EASY)], "easy")
    assert curve.faces == 3
    assert curve.ap == pytest.approx(5 / 9, abs=1e-12)
    assert curve.precision[-1] == pytest.approx(2 / 3)
    assert curve.recall[-1] == pytest.approx(2 / 3)


def test_face_in_the_subset_turns_c_into_a_true_positive() -> None:
    """All four faces counted: A, C, D recalled out of 4 faces with B the only false positive.
    Points: (R 1/4, P 1), (1/4, 1/2), (2/4, 2/3), (3/4, 3/4); envelope 1 to R 1/4, then 3/4:
    AP = 1/4 + (3/4 - 1/4) * 3/4 = 5/8."""
    curve = ev.pr_curve([PREDS], [truth(np.ones(4, dtype=bool))], "easy")
    assert curve.ap == pytest.approx(5 / 8, abs=1e-12)


def test_invalid_face_is_ignored_even_when_kept() -> None:
    invalid = np.array([False, False, False, True])
    kept = ev.pr_curve([PREDS], [truth(np.ones(4, dtype=bool), invalid)], "easy")
    assert kept.faces == 3
    assert kept.ap == pytest.approx(5 / 9, abs=1e-12)


def test_prediction_on_an_ignored_face_is_neither_true_nor_false() -> None:
    outcome = ev.match_image(ev.sort_by_score(PREDS), GT, EASY)
    assert outcome.tolist() == [ev.TRUE_POSITIVE, ev.FALSE_POSITIVE, ev.IGNORED, ev.TRUE_POSITIVE]
    point = ev.operating_point([PREDS], [truth(EASY, np.array([0, 0, 0, 1], dtype=bool))], 0.5)
    assert (point.true_positives, point.false_positives, point.ignored) == (2, 1, 1)
    assert [d.box for d in point.false_detections] == [(500.0, 500.0, 510.0, 510.0)]
    assert point.precision == pytest.approx(2 / 3)
    assert point.recall == pytest.approx(2 / 3)


def test_duplicate_detection_is_a_false_positive() -> None:
    preds = np.array([[0, 0, 10, 10, 0.9], [1, 0, 11, 10, 0.8]], dtype=np.float64)
    outcome = ev.match_image(preds, GT, EASY)
    assert outcome.tolist() == [ev.TRUE_POSITIVE, ev.FALSE_POSITIVE]


def test_operating_point_drops_scores_below_threshold() -> None:
    point = ev.operating_point([PREDS], [truth(EASY)], 0.75)
    assert (point.true_positives, point.false_positives, point.faces) == (1, 1, 4)


def test_iou_uses_the_plus_one_pixel_convention() -> None:
    a = np.array([[0, 0, 9, 9]], dtype=np.float64)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float64)
    # 10x10 = 100 pixels inside an 11x11 = 121 pixel box.
    assert ev.box_overlaps(a, b)[0].tolist() == pytest.approx([100 / 121, 0.0])


def test_voc_ap_of_a_perfect_detector_is_one() -> None:
    assert ev.voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_predictions_from_faces_are_sorted_by_score() -> None:
    faces = [Face((0, 0, 5, 5), 0.3), Face((1, 1, 6, 6), 0.9)]
    assert ev.predictions(faces)[:, 4].tolist() == [0.9, 0.3]
    assert ev.predictions([]).shape == (0, 5)


def test_image_without_predictions_still_counts_its_faces() -> None:
    empty = np.zeros((0, 5))
    curve = ev.pr_curve([PREDS, empty], [truth(EASY), truth(EASY)], "easy")
    assert curve.faces == 6
    assert curve.recall[-1] == pytest.approx(2 / 6)


# A literal transcription of the official Python evaluation (WiderFace-Evaluation's
# evaluation.py: bbox_overlaps, image_eval, img_pr_info, dataset_pr_info, voc_ap, norm_score),
# used as an oracle on random data. Boxes there are x, y, w, h.


def _official_overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    out = np.zeros((len(boxes), len(query)))
    for k in range(len(query)):
        box_area = (query[k, 2] - query[k, 0] + 1) * (query[k, 3] - query[k, 1] + 1)
        for n in range(len(boxes)):
            iw = min(boxes[n, 2], query[k, 2]) - max(boxes[n, 0], query[k, 0]) + 1
            if iw > 0:
                ih = min(boxes[n, 3], query[k, 3]) - max(boxes[n, 1], query[k, 1]) + 1
                if ih > 0:
                    ua = (boxes[n, 2] - boxes[n, 0] + 1) * (boxes[n, 3] - boxes[n, 1] + 1)
                    out[n, k] = iw * ih / (ua + box_area - iw * ih)
    return out


def _official_image_eval(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray, iou_thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] += _pred[:, 0]
    _pred[:, 3] += _pred[:, 1]
    _gt[:, 2] += _gt[:, 0]
    _gt[:, 3] += _gt[:, 1]
    overlaps = _official_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def _official_img_pr_info(
    thresh_num: int, pred_info: np.ndarray, proposal_list: np.ndarray, pred_recall: np.ndarray
) -> np.ndarray:
    pr_info = np.zeros((thresh_num, 2)).astype("float")
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index) == 0:
            pr_info[t, 0] = 0
            pr_info[t, 1] = 0
        else:
            r_index = r_index[-1]
            p_index = np.where(proposal_list[: r_index + 1] == 1)[0]
            pr_info[t, 0] = len(p_index)
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def _official_voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _official_ap(preds: list[np.ndarray], gts: list[np.ndarray], keeps: list[np.ndarray]) -> float:
    """preds: per image x, y, w, h, score sorted by score; keeps: 1-based kept indices."""
    low = min(p[:, -1].min() for p in preds if len(p))
    high = max(p[:, -1].max() for p in preds if len(p))
    preds = [p.copy() for p in preds]
    for p in preds:
        p[:, -1] = (p[:, -1] - low) / (high - low)
    thresh_num, count_face = 1000, 0
    pr_curve = np.zeros((thresh_num, 2)).astype("float")
    for pred_info, gt_boxes, keep_index in zip(preds, gts, keeps, strict=True):
        count_face += len(keep_index)
        if len(gt_boxes) == 0 or len(pred_info) == 0:
            continue
        ignore = np.zeros(gt_boxes.shape[0])
        if len(keep_index) != 0:
            ignore[keep_index - 1] = 1
        pred_recall, proposal_list = _official_image_eval(pred_info, gt_boxes, ignore, 0.5)
        pr_curve += _official_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = pr_curve[:, 1] / pr_curve[:, 0]
    return _official_voc_ap(pr_curve[:, 1] / count_face, precision)


@pytest.mark.parametrize("seed", range(8))
def test_matches_the_official_evaluation_on_random_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds_xywh, gts_xywh, keeps, truths, preds_xyxy = [], [], [], [], []
    for _ in range(6):
        n = int(rng.integers(0, 12))
        xy = rng.integers(0, 200, size=(n, 2))
        wh = rng.integers(1, 40, size=(n, 2))
        gt = np.concatenate([xy, wh], axis=1).astype(np.float64)
        keep_mask = rng.random(n) < 0.7
        # Predictions: jittered copies of faces, plus a few random boxes.
        jitter = rng.normal(0, 3, size=(n, 4)) if n else np.zeros((0, 4))
        near = gt + jitter
        m = int(rng.integers(0, 6))
        noise = np.concatenate(
            [rng.integers(0, 200, size=(m, 2)), rng.integers(2, 40, size=(m, 2))], axis=1
        )
        boxes = np.concatenate([near, noise]).astype(np.float64)
        scores = rng.random(len(boxes))
        pred = np.concatenate([boxes, scores[:, None]], axis=1)
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        preds_xywh.append(pred)
        gts_xywh.append(gt)
        keeps.append(np.nonzero(keep_mask)[0] + 1)
        xyxy = pred.copy()
        xyxy[:, 2:4] += xyxy[:, 0:2]
        preds_xyxy.append(xyxy)
        gt_xyxy = gt.copy()
        gt_xyxy[:, 2:4] += gt_xyxy[:, 0:2]
        truths.append(ev.ImageTruth("r", gt_xyxy, np.zeros(n, dtype=bool), {"hard": keep_mask}))
    expected = _official_ap(preds_xywh, gts_xywh, keeps)
    assert 0.05 < expected < 0.95  # a curve with both misses and false positives
    assert ev.pr_curve(preds_xyxy, truths, "hard").ap == pytest.approx(expected, abs=1e-12)


# The manifest and the official ground-truth files.


def test_false_detection_kinds_and_size_bands() -> None:
    hand = truth(EASY)
    near = ev.FalseDetection("hand", (3, 0, 13, 10), 0.9)  # IoU 8*11 / (2*121 - 88) = 0.57
    assert ev.false_detection_kind(near, hand) == "duplicate"
    shifted = ev.FalseDetection("hand", (5, 0, 15, 10), 0.9)  # IoU 6*11 / (242 - 66) = 0.375
    assert ev.false_detection_kind(shifted, hand) == "near a face"
    assert ev.false_detection_kind(ev.FalseDetection("hand", (600, 0, 640, 40), 0.9), hand) == (
        "elsewhere"
    )
    assert [ev.size_band(b) for b in [(0, 0, 15, 9), (0, 0, 10, 16), (0, 0, 40, 2)]] == [
        "<16px",
        "16-32px",
        ">=32px",
    ]


def test_manifest_kinds(facedata: Path) -> None:
    entries = eval_command.read_manifest(facedata)
    kinds = Counter(e.kind for e in entries)
    assert kinds == {"wider": 257, "negative": 20, "single": 3}
    assert [e.path for e in entries if e.ambiguous] == ["negatives/dlib_scream.jpg"]
    assert {e.event for e in entries if e.kind == "wider"} == {"0--Parade", "13--Interview"}


def test_unlabelled_manifest_rows_are_skipped_not_counted_as_negatives(tmp_path: Path) -> None:
    rows = [
        {"path": "negatives/none.jpg", "width": 10, "height": 10, "faces": []},
        {"path": "unlabelled/who.jpg", "width": 10, "height": 10, "faces": None},
        {"path": "singles/one.jpg", "width": 10, "height": 10, "faces": [[1, 1, 5, 5]],
         "tags": ["single"]},
    ]  # fmt: skip
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = eval_command.read_manifest(tmp_path)
    assert [(e.path, e.kind) for e in entries] == [
        ("negatives/none.jpg", "negative"),
        ("singles/one.jpg", "single"),
    ]


def test_sweep_thresholds_are_parsed_and_checked() -> None:
    assert eval_command._thresholds("0.5,0.4, 0.3") == (0.5, 0.4, 0.3)
    with pytest.raises(Exception, match=r"within 0\.\.1"):
        eval_command._thresholds("0.5,1.5")


def test_official_subsets_of_the_present_images(facedata: Path) -> None:
    """Kept faces over the 257 images, read from the official .mat files, and agreement with
    the manifest's per-face membership (the manifest drops zero-area boxes, the .mat keeps them)."""
    manifest = [row for row in facedata_manifest() if row.get("dataset") == "WIDER FACE"]
    names = [Path(row["path"]).stem for row in manifest]
    truths = eval_command.load_ground_truth(facedata / eval_command.GROUND_TRUTH_DIR, names)
    totals = {s: sum(int(t.counted(s).sum()) for t in truths.values()) for s in ev.SUBSETS}
    assert totals == {"easy": 458, "medium": 921, "hard": 3381}
    assert sum(int(t.labelled().sum()) for t in truths.values()) == 4210
    agreeing = 0
    for row, name in zip(manifest, names, strict=True):
        t = truths[name]
        if len(t.boxes) != len(row["faces"]):
            continue
        assert t.boxes.tolist() == row["faces"]
        for subset in ev.SUBSETS:
            assert t.subsets[subset].tolist() == [bool(a[subset]) for a in row["face_attrs"]]
        assert t.invalid.tolist() == [bool(a["invalid"]) for a in row["face_attrs"]]
        agreeing += 1
    assert agreeing == 255


def test_unknown_image_is_an_error(facedata: Path) -> None:
    with pytest.raises(FocalError, match="not in the official ground truth"):
        eval_command.load_ground_truth(facedata / eval_command.GROUND_TRUTH_DIR, ["no_such"])


# The real detector (slow: runs the face model).

DENSE = "wider_face/WIDER_val/images/0--Parade/0_Parade_Parade_0_490.jpg"  # 70 faces of 20+ px
SINGLE = "singles/mpl_grace_hopper.jpg"
TALL = "wider_face/WIDER_val/images/0--Parade/0_Parade_Parade_0_194.jpg"  # 1024 x 1388


@pytest.mark.slow
def test_low_threshold_run_holds_the_operating_point_detections(facedata: Path) -> None:
    """Greedy NMS never lets a lower score suppress a higher one and nothing caps the count, so
    the detections above 0.5 of a run at 0.02 are exactly those of a run at 0.5: one run serves
    both AP and the operating point."""
    model_dir = require_model_dir()
    low = rt.load_detector(model_dir, score_threshold=0.02)
    high = rt.load_detector(model_dir, score_threshold=0.5)
    path = facedata / DENSE
    all_faces = eval_command.detect_path(low, path, 1024)
    operating = eval_command.detect_path(high, path, 1024)
    assert len(operating) >= 30
    assert len(all_faces) > len(operating)
    assert [f for f in all_faces if f.score > 0.5] == operating


@pytest.mark.slow
def test_frozen_graph_heads_match_the_converted_model(facedata: Path) -> None:
    installed = require_model()
    heads = rt.FrozenGraphHeads(installed.graph_path)
    ours = rt.open_session(installed.model_path, "onnxruntime")
    image, _ = det.load_inference_image(facedata / TALL)
    batch = retinaface.preprocess([image])
    expected, got = ours.run(batch), heads.run(batch)
    assert (
        got.scores.shape
        == expected.scores.shape
        == (1, retinaface.anchors(*batch.shape[1:3]).shape[0])
    )
    assert np.abs(got.scores - expected.scores).max() < 1e-3
    assert np.abs(got.boxes - expected.boxes).max() < 1e-2
    assert float(expected.scores.max()) > 0.99  # the image has faces: the check is not vacuous


def _small_data(facedata: Path, root: Path, paths: list[str]) -> Path:
    """An evaluation folder with a few of the manifest's images (symlinked, never copied)."""
    rows = {row["path"]: row for row in facedata_manifest()}
    lines = []
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(facedata / path)
        lines.append(json.dumps(rows[path]))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    truth_dir = root / eval_command.GROUND_TRUTH_DIR
    truth_dir.parent.mkdir(parents=True, exist_ok=True)
    truth_dir.symlink_to(facedata / eval_command.GROUND_TRUTH_DIR)
    return root


@pytest.mark.slow
def test_eval_command_end_to_end(
    facedata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_model()
    negatives = ["negatives/skimage_coffee.png", "negatives/dlib_scream.jpg"]
    data = _small_data(facedata, tmp_path / "data", [TALL, DENSE, *negatives, SINGLE])
    out = tmp_path / "widerface.json"
    code = cli.main(["eval", "widerface", "--data", str(data), "--reference", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["images_larger_than_cap"] == 1
    assert [s["max_side"] for s in report["settings"]] == [1024, 0]
    for setting in report["settings"]:
        wider = setting["wider"]
        assert wider["images"] == 2
        assert 50 < wider["ap"]["easy"] <= 100
        op = wider["operating_point"]
        assert op["true_positives"] + op["false_positives"] > 30
        assert setting["reference"]["within_tolerance"]
        assert setting["negatives"]["images"] == 1
        assert [a["image"] for a in setting["negatives"]["ambiguous"]] == negatives[1:]
        assert setting["singles"][0]["found"]
    assert "| focal (" in capsys.readouterr().out
    assert report["command"].startswith("focal eval widerface --data ")


def test_eval_command_without_a_model_exits_3(facedata: Path, tmp_path: Path) -> None:
    code = cli.main(
        [
            "eval",
            "widerface",
            "--data",
            str(facedata),
            "--model-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "out.json"),
        ]
    )
    assert code == 3
    assert not (tmp_path / "out.json").exists()


def test_accuracy_doc_table_is_the_one_the_results_give() -> None:
    root = Path(__file__).resolve().parents[1]
    report = json.loads((root / "benchmarks/results/widerface.json").read_text())
    table = eval_command.markdown_table(report)
    assert table.count("\n") == 6  # header, rule, 2 settings x (focal, reference), published
    assert table in (root / "docs/accuracy.md").read_text()
    assert report["command"] in (root / "docs/accuracy.md").read_text()


def test_eval_command_without_data_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["eval", "widerface", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "manifest.jsonl not found" in capsys.readouterr().err


def test_threshold_tables_in_the_docs_are_the_ones_the_sweep_gives() -> None:
    root = Path(__file__).resolve().parents[1]
    report = json.loads((root / "benchmarks/results/widerface_sweep.json").read_text())
    (setting,) = report["settings"]
    accuracy = (root / "docs/accuracy.md").read_text()
    cropping = (root / "docs/cropping.md").read_text()
    for row in setting["sweep"]:
        t, p, r = row["threshold"], row["precision"], row["recall"]
        negatives = row["negative_detections"]
        assert f"| {t} | {p:.2f}% | {r:.2f}% | {row['false_positives']} | {negatives} |" in accuracy
        assert f"| {t} | {negatives} | {p:.2f}% | {r:.2f}% |" in cropping
    assert " ".join(report["command"].split()) in " ".join(cropping.split())


@pytest.mark.parametrize(("text", "side"), [("0", 0), ("1024", 1024), ("768", 768), ("256", 256)])
def test_eval_takes_original_scale_or_a_detection_side_focal_offers(text: str, side: int) -> None:
    assert eval_command.max_side(text) == side


@pytest.mark.parametrize("text", ["100", "2048", "-1", "big"])
def test_eval_refuses_a_detection_side_focal_does_not_offer(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected 0 or 256 to 1024"):
        eval_command.max_side(text)


def test_an_image_is_detected_as_is_where_it_fits_the_cap() -> None:
    assert eval_command.within(700, 0) and eval_command.within(700, 768)
    assert not eval_command.within(800, 768)
