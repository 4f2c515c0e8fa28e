"""Inference sessions: choices, and every runtime/precision against ONNX Runtime fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO
from focal import errors
from focal.face import detector as det
from focal.face import retinaface as rf
from focal.face import sessions as rt
from model_fixtures import require_model


def test_auto_resolves_to_the_measured_default() -> None:
    assert rt.resolve("auto", "fp32") == (rt.DEFAULT_RUNTIME, "fp32")
    assert rt.resolve("onnxruntime", "fp32") == ("onnxruntime", "fp32")


@pytest.mark.parametrize(
    ("runtime", "precision", "message"),
    [
        ("tensorflow", "fp32", "unknown runtime 'tensorflow'"),
        ("openvino", "int4", "unknown precision 'int4'"),
        ("onnxruntime", "bf16", "fp32 only"),
    ],
)
def test_bad_choices_are_refused_with_a_reason(runtime: str, precision: str, message: str) -> None:
    with pytest.raises(errors.RuntimeChoiceError, match=message):
        rt.resolve(runtime, precision)


def test_openvino_always_offers_fp32() -> None:
    assert rt.openvino_precisions()[0] == "fp32"


@pytest.fixture(scope="module")
def model_path() -> Path:
    return require_model().model_path


@pytest.fixture(scope="module")
def batch() -> rf.FloatArray:
    image, _ = det.load_inference_image(DEMO / "astronaut.jpg")
    return rf.preprocess([image, image[:300, :400]])


@pytest.fixture(scope="module")
def baseline(model_path: Path, batch: rf.FloatArray) -> rf.RawOutputs:
    return rt.open_session(model_path, "onnxruntime").run(batch)


@pytest.mark.slow
def test_outputs_have_one_row_per_anchor(baseline: rf.RawOutputs, batch: rf.FloatArray) -> None:
    anchors = len(rf.anchors(batch.shape[1], batch.shape[2]))
    assert baseline.boxes.shape == (2, anchors, 4)
    assert baseline.landmarks.shape == (2, anchors, 10)
    assert baseline.scores.shape == (2, anchors)
    assert 0.0 <= float(baseline.scores.min()) and float(baseline.scores.max()) <= 1.0
    assert float(baseline.scores.max()) > 0.99  # the astronaut's face


@pytest.mark.slow
def test_openvino_fp32_matches_onnxruntime(
    model_path: Path, batch: rf.FloatArray, baseline: rf.RawOutputs
) -> None:
    outputs = rt.open_session(model_path, "openvino", "fp32").run(batch)
    assert np.abs(outputs.scores - baseline.scores).max() <= 1e-3
    assert np.abs(outputs.boxes - baseline.boxes).max() <= 1e-2
    assert np.abs(outputs.landmarks - baseline.landmarks).max() <= 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "f16"])
def test_lower_precisions_run_and_find_the_same_face(
    precision: str, model_path: Path, batch: rf.FloatArray, baseline: rf.RawOutputs
) -> None:
    if precision not in rt.openvino_precisions():
        with pytest.raises(errors.RuntimeChoiceError, match=precision):
            rt.open_session(model_path, "openvino", precision)
        return
    session = rt.open_session(model_path, "openvino", precision)
    assert session.precision == precision
    priors = rf.anchors(batch.shape[1], batch.shape[2])
    (face,) = rf.to_faces(rf.postprocess(session.run(batch), 0, priors, rf.Settings()))
    (expected,) = rf.to_faces(rf.postprocess(baseline, 0, priors, rf.Settings()))
    overlap = rf.iou(np.array(face.box), np.array([expected.box]))
    assert float(overlap[0]) >= 0.9
