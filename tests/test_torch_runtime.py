"""The torch runtime: graph translation, device-side decoding and NMS, batching, idle offload, and
the same faces as the ONNX Runtime detector on real photos (CPU here; the same code runs on GPUs).

torch is the optional `gpu` extra; these tests need it installed (CI installs torch==2.13.0) and
fail, never skip, without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import DEMO, FACEDATA, facedata_manifest

try:
    import torch
except ImportError:  # pragma: no cover - the message is the point
    pytest.fail(
        "torch is not installed: these tests need the 'gpu' extra "
        "(.venv/bin/pip install torch==2.13.0)",
        pytrace=False,
    )

import onnxruntime as ort
import pyvips

from focal import errors
from focal.detection import Face, RGBImage
from focal.errors import ModelMissingError
from focal.face import detector as det
from focal.face import evaluation as ev
from focal.face import models, retinaface
from focal.face import sessions as rt
from focal.face import torch_detector as tr
from focal.face import torch_graph as tg
from focal.face import torch_postprocess as tp

# --- helpers --------------------------------------------------------------------------------


def read_rgb(path: Path) -> RGBImage:
    return det._to_numpy(pyvips.Image.new_from_file(str(path)))


def assert_same_faces(
    reference: Sequence[Face], candidate: Sequence[Face], min_iou: float, score_tol: float
) -> None:
    found = ev.agreement(reference, candidate, min_iou)
    assert found.reference == found.candidate, found
    assert found.paired == found.reference, found
    assert found.max_score_difference <= score_tol, found


def wider_rows(fits: bool, count: int) -> list[dict[str, object]]:
    """The first `count` WIDER FACE images with faces that fit the 1024 cap (fits) or not."""
    rows = [r for r in facedata_manifest() if r.get("dataset") == "WIDER FACE" and r["faces"]]
    chosen = [r for r in rows if (max(int(r["width"]), int(r["height"])) <= 1024) == fits]
    return chosen[:count]


@pytest.fixture(scope="module")
def installed() -> models.Installed:
    return models.require()


@pytest.fixture(scope="module")
def reference(installed: models.Installed) -> det.RetinaFace:
    return rt.load_detector(runtime="onnxruntime")


@pytest.fixture(scope="module")
def detector(installed: models.Installed) -> tr.TorchDetector:
    return tr.load_torch_detector(device="cpu", idle_offload_s=None, max_batch=8)


@pytest.fixture(scope="module")
def singles() -> list[RGBImage]:
    paths = sorted((FACEDATA / "singles").iterdir())
    assert len(paths) == 3
    return [read_rgb(p) for p in paths]


# --- the translator on a small graph of every op kind ------------------------------------------


def small_graph() -> onnx.ModelProto:
    """NHWC input -> normalise -> SAME stride-2 conv, ReLU6, depthwise conv, LeakyReLU, 1x1
    stride-2 conv, nearest upsampling, residual adds, concat, ReLU, heads reshaped and soft-maxed:
    the op kinds of the RetinaFace graph, with random weights."""
    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    def const(name: str, values: object, dtype: type = np.float32) -> TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=dtype), name)

    init = [
        const("scale", 127.5),
        const("one", 1.0),
        weight("w1", 8, 3, 3, 3),
        weight("b1", 8),
        const("lo", 0.0),
        const("hi", 6.0),
        weight("w2", 8, 1, 3, 3),
        weight("b2", 8),
        weight("w3", 8, 8, 1, 1),
        const("scales", [1.0, 1.0, 2.0, 2.0]),
        weight("bias", 1, 8, 1, 1),
        weight("w4", 4, 16, 1, 1),
        const("shape", [0, -1, 2], np.int64),
        const("index", 1, np.int64),
    ]
    node = helper.make_node
    nodes = [
        node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        node("Div", ["nchw", "scale"], ["halved"]),
        node("Sub", ["halved", "one"], ["normal"]),
        node(
            "Conv",
            ["normal", "w1", "b1"],
            ["c1"],
            kernel_shape=[3, 3],
            pads=[0, 0, 1, 1],
            strides=[2, 2],
        ),
        node("Clip", ["c1", "lo", "hi"], ["a"]),
        node("Conv", ["a", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        node("LeakyRelu", ["c2"], ["b"], alpha=0.1),
        node("Conv", ["b", "w3"], ["c"], kernel_shape=[1, 1], strides=[2, 2]),
        node(
            "Resize",
            ["c", "", "scales"],
            ["d"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        node("Add", ["b", "d"], ["e"]),
        node("Add", ["e", "bias"], ["f"]),
        node("Concat", ["f", "a"], ["g"], axis=1),
        node("Relu", ["g"], ["h"]),
        node("Conv", ["h", "w4"], ["i"], kernel_shape=[1, 1]),
        node("Transpose", ["i"], ["j"], perm=[0, 2, 3, 1]),
        node("Reshape", ["j", "shape"], ["k"]),
        node("Softmax", ["k"], ["s"], axis=-1),
        node("Gather", ["s", "index"], ["scores"], axis=2),
        node("Identity", ["k"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
        ],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, {"x": x})]


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_translated_small_graph_matches_onnxruntime(layout: torch.memory_format) -> None:
    model = small_graph()
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 64, 3)).astype(np.float32)
    expected = run_onnxruntime(model, x)
    module = tg.translate(model).set_memory_format(layout)
    with torch.inference_mode():
        got = [t.numpy() for t in module(torch.from_numpy(x))]
    assert [g.shape for g in got] == [e.shape for e in expected] == [(2, 1024, 2), (2, 1024)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_translated_small_graph_in_fp16_stays_close() -> None:
    model = small_graph()
    x = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    expected = run_onnxruntime(model, x)[1]
    module = tg.translate(model).to(dtype=torch.float16)
    with torch.inference_mode():
        scores = module(torch.from_numpy(x).half())[1]
    assert scores.dtype == torch.float32  # the softmax runs in float32
    np.testing.assert_allclose(scores.numpy(), expected, atol=0.02)


@pytest.mark.slow
def test_translated_graph_is_one_graph_for_torch_compile() -> None:
    """torch.compile (TorchDynamo) captures the whole module without a graph break."""
    module = tg.translate(small_graph()).set_memory_format(torch.channels_last)
    compiled = torch.compile(module, backend="eager", fullgraph=True, dynamic=False)
    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (1, 32, 32, 3)).astype("f4"))
    with torch.inference_mode():
        for got, want in zip(compiled(x), module(x), strict=True):
            assert torch.equal(got, want)


def test_translation_frees_intermediate_values() -> None:
    module = tg.translate(small_graph())
    released = {name for wire in module.wires for name in wire.release}
    produced = {wire.output for wire in module.wires} | {"x"}
    assert released == produced - {"logits", "scores"}


def test_unsupported_op_is_named() -> None:
    model = small_graph()
    model.graph.node.append(helper.make_node("Erf", ["scores"], ["erf"]))
    with pytest.raises(errors.OnnxGraphError, match="unsupported ONNX op Erf"):
        tg.translate(model)


def test_resize_other_than_nearest_floor_is_refused() -> None:
    model = small_graph()
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    mode = next(a for a in resize.attribute if a.name == "mode")
    mode.CopyFrom(helper.make_attribute("mode", "linear"))
    with pytest.raises(errors.OnnxGraphError, match="Resize"):
        tg.translate(model)


def test_converted_model_ops_are_all_translated(installed: models.Installed) -> None:
    model = onnx.load(str(installed.model_path))
    kinds = set(tg.op_types(model))
    assert kinds >= {"Conv", "Clip", "LeakyRelu", "Resize", "Softmax", "Gather"}
    module = tg.translate(model)
    assert len(module.steps) == len(model.graph.node)
    depthwise = [s for s in module.steps if isinstance(s, tg.Conv) and s.conv.groups > 1]
    assert depthwise and all(s.conv.groups == s.conv.in_channels for s in depthwise)
    assert module.output_names == retinaface.OUTPUT_NAMES


# --- decoding and NMS against the numpy reference ----------------------------------------------


def random_boxes(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 200, (count, 2))
    wh = rng.uniform(5, 60, (count, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return boxes, rng.uniform(0.5, 1.0, count).astype(np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_nms_keeps_what_the_numpy_nms_keeps(seed: int) -> None:
    boxes, scores = random_boxes(np.random.default_rng(seed), 300)
    expected = retinaface.nms(boxes, scores, 0.4)
    got = tp.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4).numpy()
    assert len(expected) > 20
    np.testing.assert_array_equal(got, expected)


def test_batched_nms_suppresses_within_each_item_only() -> None:
    rng = np.random.default_rng(3)
    boxes, scores = random_boxes(rng, 200)
    groups = rng.integers(0, 4, 200)
    kept = tp.batched_nms_torch(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.4
    ).numpy()
    for group in range(4):
        members = np.flatnonzero(groups == group)
        expected = members[retinaface.nms(boxes[members], scores[members], 0.4)]
        np.testing.assert_array_equal(kept[groups[kept] == group], expected)
    assert np.all(np.diff(scores[kept]) <= 0)  # best score first over the whole batch


def test_identical_boxes_in_two_items_are_both_kept() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    kept = tp.batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.4)
    assert sorted(kept.tolist()) == [0, 1]


def test_decoding_matches_the_numpy_decoding() -> None:
    rng = np.random.default_rng(4)
    priors = retinaface.anchors(64, 96)
    deltas = rng.normal(0, 1, (len(priors), 4)).astype(np.float32)
    marks = rng.normal(0, 1, (len(priors), 10)).astype(np.float32)
    boxes = tp.decode_boxes(torch.from_numpy(deltas), torch.from_numpy(priors)).numpy()
    points = tp.decode_landmarks(torch.from_numpy(marks), torch.from_numpy(priors)).numpy()
    expected_boxes = retinaface.decode_boxes(deltas, priors)
    expected_points = retinaface.decode_landmarks(marks, priors)
    np.testing.assert_allclose(boxes, expected_boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(points, expected_points, rtol=1e-5, atol=1e-4)


def test_decode_batch_groups_rows_by_item_best_first() -> None:
    priors = torch.from_numpy(retinaface.anchors(32, 32))
    count = len(priors)
    scores = torch.zeros(3, count)
    scores[0, [3, 40]] = torch.tensor([0.7, 0.9])
    scores[2, 5] = 0.8
    outputs = (torch.zeros(3, count, 4), torch.zeros(3, count, 10), scores)
    found = tp.decode_batch(outputs, priors, retinaface.Settings(), count=3)
    assert found.items.tolist() == [0, 0, 2]
    np.testing.assert_allclose(found.scores, [0.9, 0.7, 0.8])
    assert len(found.detections(1).boxes) == 0
    only_two = tp.decode_batch(outputs, priors, retinaface.Settings(), count=2)
    assert only_two.items.tolist() == [0, 0]  # padding items of a CUDA-graph batch are dropped


# --- batching plan and validation --------------------------------------------------------------


def test_plan_batches_groups_by_padded_size_in_request_order() -> None:
    shapes = [(512, 512), (600, 512), (500, 500), (512, 512), (1024, 683), (512, 512)]
    plan = tr.plan_batches(shapes, max_batch=2)
    assert [(b.height, b.width, b.indices) for b in plan] == [
        (512, 512, (0, 2)),
        (512, 512, (3, 5)),
        (608, 512, (1,)),
        (1024, 704, (4,)),
    ]


def test_inference_shape_follows_the_cap() -> None:
    assert tr.inference_shape(np.zeros((2000, 125, 3), np.uint8)) == (1024, 64)
    assert tr.inference_shape(np.zeros((700, 900, 3), np.uint8)) == (700, 900)


def test_a_non_rgb_image_is_refused(detector: tr.TorchDetector) -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        detector.detect([np.zeros((8, 8), np.uint8)])
    assert detector.detect([]) == []


def test_unknown_precision_and_device_are_refused(installed: models.Installed) -> None:
    with pytest.raises(errors.TorchRuntimeError, match="precision 'int8'"):
        tr.load_torch_detector(precision="int8")
    with pytest.raises(errors.TorchRuntimeError, match="device 'tpu'"):
        tr.load_torch_detector(device="tpu")


def test_missing_model_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="focal models fetch"):
        tr.load_torch_detector(model_dir=tmp_path)


def test_model_id_matches_the_cpu_detector_in_fp32(
    reference: det.RetinaFace, detector: tr.TorchDetector
) -> None:
    assert detector.model_id == reference.model_id
    fp16 = tr.load_torch_detector(precision="f16", device="cpu")
    assert fp16.model_id == reference.model_id + ":torch-fp16"
    assert not fp16.loaded  # nothing is loaded before the first detect


def test_default_install_does_not_import_torch() -> None:
    code = (
        "import sys, focal.cli, focal.pipeline, focal.face.retinaface, focal.face.detector, "
        "focal.face.sessions, focal.server.app, focal.server.detection.pool, "
        "focal.server.detection.worker; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_same_faces_as_onnxruntime_on_photos(
    reference: det.RetinaFace, detector: tr.TorchDetector, singles: list[RGBImage]
) -> None:
    wider = [read_rgb(FACEDATA / str(r["path"])) for r in wider_rows(fits=True, count=3)]
    images = singles + wider
    expected = reference.detect(images)
    got = detector.detect(images)
    assert sum(len(f) for f in expected) >= 10
    for want, have in zip(expected, got, strict=True):
        assert_same_faces(want, have, min_iou=0.99, score_tol=1e-3)


@pytest.mark.slow
def test_same_faces_as_onnxruntime_on_images_over_the_cap(
    reference: det.RetinaFace, detector: tr.TorchDetector
) -> None:
    """Over 1024 pixels: on the same capped pixels the faces are the same; resized on the device
    (bicubic, not libvips' lanczos3) they are the same faces, in the original's coordinates."""
    images = [read_rgb(FACEDATA / str(r["path"])) for r in wider_rows(fits=False, count=2)]
    capped = [det.fit_to_cap(image) for image in images]
    expected = reference.detect(images)
    assert all(len(f) for f in expected)
    for want, have in zip(reference.detect(capped), detector.detect(capped), strict=True):
        assert_same_faces(want, have, min_iou=0.99, score_tol=1e-3)
    for want, have in zip(expected, detector.detect(images), strict=True):
        assert_same_faces(want, have, min_iou=0.95, score_tol=0.02)
        assert max(max(f.box[2], f.box[3]) for f in have) > 1024 * 0.5


@pytest.mark.slow
def test_device_resize_is_close_to_the_cpu_resize() -> None:
    row = wider_rows(fits=False, count=1)[0]
    image = read_rgb(FACEDATA / str(row["path"]))
    expected = det.fit_to_cap(image).astype(np.float32)
    height, width = expected.shape[:2]
    got = tr.resize(torch.from_numpy(image), height, width).numpy()
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).mean()) < 1.0


@pytest.mark.slow
def test_results_follow_input_order_whatever_the_batch(
    installed: models.Installed, singles: list[RGBImage]
) -> None:
    astronaut, camera, hopper = (singles[i] for i in (1, 2, 0))
    demo = read_rgb(DEMO / "astronaut.jpg")
    small = np.ascontiguousarray(hopper[::2, ::2])
    pool = [astronaut, camera, hopper, demo, small]
    detector = tr.load_torch_detector(device="cpu", idle_offload_s=None, max_batch=2)
    alone = [detector.detect([image])[0] for image in pool]
    assert all(alone[i] for i in (0, 2, 3))
    compositions = [
        [0, 1, 2, 3, 4],
        [4, 3, 2, 1, 0],
        [2, 0, 2, 4, 0, 2],  # duplicates, mixed sizes, split over several batches
        [3],
    ]
    for order in compositions:
        got = detector.detect([pool[i] for i in order])
        assert len(got) == len(order)
        for index, faces in zip(order, got, strict=True):
            assert_same_faces(alone[index], faces, min_iou=0.999, score_tol=1e-4)


@pytest.mark.slow
def test_idle_offload_releases_and_reloads(
    installed: models.Installed, singles: list[RGBImage]
) -> None:
    detector = tr.load_torch_detector(device="cpu", idle_offload_s=0.3)
    image = singles[1]
    first = detector.detect([image])[0]
    assert detector.loads == 1 and detector.cold_start_s is not None
    deadline = time.monotonic() + 30
    while detector.loaded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not detector.loaded, "the model was not released after the idle time"
    again = detector.detect([image])[0]
    assert detector.loads == 2
    assert first and again == first
    assert detector.unload() is True
    assert detector.unload() is False
    detector.close()


@pytest.mark.slow
def test_fp16_finds_the_same_faces(detector: tr.TorchDetector, singles: list[RGBImage]) -> None:
    fp16 = tr.load_torch_detector(device="cpu", precision="fp16", idle_offload_s=None)
    image = singles[1]
    assert_same_faces(detector.detect([image])[0], fp16.detect([image])[0], 0.95, 0.02)


def test_benchmark_smoke_results_are_kept() -> None:
    """benchmarks/experiments/gpu.py --device cpu --quick was run and its JSON kept (docs/gpu.md
    cites it)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu-cpu-smoke.json"
    result = json.loads(path.read_text())
    assert result["device"]["type"] == "cpu"
    assert result["equivalence"]["fp32"]["all_same"] is True


@pytest.mark.slow
def test_read_only_images_are_accepted(detector: tr.TorchDetector, singles: list[RGBImage]) -> None:
    image = singles[1]
    frozen = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.shape)
    assert not frozen.flags.writeable
    assert detector.detect([frozen]) == detector.detect([image])
