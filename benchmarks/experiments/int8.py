"""Post-training int8 quantisation of the face detector on the CPU: measured against the bar
of issue #13, fixed before measuring.

Two recipes (--recipe):

  onnxruntime (the default): ONNX Runtime static quantisation (``quantize_static``) of focal's
    converted fp32 model, QDQ format, weights int8 per channel, activations uint8 per tensor,
    MinMax calibration; run with ONNX Runtime.
  nncf-openvino: NNCF (``nncf.quantize``, its default "performance" preset: symmetric int8
    weights and activations, fast bias correction) on the OpenVINO model read from the same
    ONNX file; run with OpenVINO as an IR (.xml/.bin). Needs ``pip install nncf`` (not a
    dependency of focal). Its AP is measured by focal eval's own evaluation in this process,
    the detector's session opened on the IR. --nncf-variants adds the NNCF variants
    (NNCF_VARIANTS).

Both recipes use the same calibration inputs. Calibration images: the demo photos
(src/focal/demo, public domain / CC0 / the matplotlib licence) and the public-domain / CC0
images of ../shared/facedata/negatives, each scaled to 1024, 640 and 320 px on its longer side
and preprocessed as the detector does (focal.face.detector.fit_to_cap at the 1024 cap,
focal.face.retinaface.preprocess). No WIDER FACE image is used (their licence is for
evaluation; AP is measured on them), so calibration and the AP images do not overlap; the demo
portraits of Eileen Collins and Grace Hopper are also two of the three singles of the
crop-quality set.

The bar (an int8 model is offered only if 1; it becomes the default only if 1, 2 and 3):

  1. WIDER FACE AP at the 1024 cap (`focal eval widerface --max-side 1024`, ../shared/facedata)
     within 0.5 points of fp32 on each of easy, medium and hard
  2. CPU ms per detection (network, decode and NMS: RetinaFace.detect_prepared), interleaved
     A/B, median int8 / fp32 ratio <= 0.8 both at 1024 x 1024 and under a mixed-size load
  3. crop quality (benchmarks/crop_quality.py --skip-thumbor --methods focal-face): the share of
     images where every face was kept does not drop at any aspect ratio

The int8 model is written into a model folder of its own (with a manifest, so that
`focal eval widerface --model-dir` and FOCAL_MODEL_DIR load it); its model_id differs from the
fp32 one by the model file's hash. Results: benchmarks/results/int8.json.

    .venv/bin/python benchmarks/experiments/int8.py [--repeat 15] [--skip-crop-quality] [--variants]
    .venv/bin/python benchmarks/experiments/int8.py --recipe nncf-openvino [--nncf-variants]

--variants also measures the AP of four variants of the ONNX Runtime recipe (VARIANTS: parts of
the network left in fp32, moving-average calibration ranges). Results: benchmarks/results/int8.json
(onnxruntime), benchmarks/results/int8_openvino.json (nncf-openvino).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
from focal.detection import RGBImage
from focal.face import detector as det
from focal.face import models, sessions
from focal.face import retinaface as rf
from focal.face.sessions import OnnxRuntimeSession, OpenVinoSession

COMMAND = ".venv/bin/python benchmarks/experiments/int8.py"
CALIBRATION_NEGATIVES = (  # public domain or CC0 (../shared/facedata/manifest.jsonl)
    "skimage_chelsea.png",
    "skimage_rocket.jpg",
    "skimage_horse.png",
    "skimage_coins.png",
    "skimage_brick.png",
    "skimage_hubble_deep_field.jpg",
)
CALIBRATION_SIDES = (1024, 640, 320)
AP_TOLERANCE = 0.5  # points, each of easy / medium / hard
SPEED_RATIO = 0.8  # int8 / fp32 median ms per detection
MIXED_SIDES = ((1024, 768), (640, 480), (480, 640), (800, 800), (320, 240), (1024, 576))
ASPECTS = ("1:1", "4:5", "16:9")


def calibration_paths() -> list[Path]:
    demo = [p for p in sorted(harness.DEMO.iterdir()) if p.suffix in (".jpg", ".png")]
    return demo + [harness.FACEDATA / "negatives" / name for name in CALIBRATION_NEGATIVES]


def scaled(image: RGBImage, side: int) -> RGBImage:
    """The image scaled (libvips) so that its longer side is ``side``, then fitted to the cap."""
    factor = side / max(image.shape[:2])
    resized = det._to_numpy(det._from_numpy(image).resize(factor))
    return det.fit_to_cap(resized)


def calibration_batches(paths: Sequence[Path], sides: Sequence[int]) -> list[rf.FloatArray]:
    """One preprocessed batch per image and side; a path that cannot be read is an error."""
    batches = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"calibration image missing: {path}")
        image, _ = det.load_inference_image(path)
        batches += [rf.preprocess([scaled(image, side)]) for side in sides]
    return batches


def kept_in_fp32(model: Path, parts: Sequence[str]) -> list[str]:
    """Names of the nodes left unquantised: "heads" (the nine head convolutions, each feeding
    a Transpose, and everything after them), "input" (the normalisation and the first
    convolution)."""
    import onnx

    graph = onnx.load(str(model)).graph
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    names: list[str] = []
    if "heads" in parts:
        todo = [
            n
            for n in graph.node
            if n.op_type == "Conv" and any(u.op_type == "Transpose" for u in users[n.output[0]])
        ]
        while todo:
            node = todo.pop()
            if node.name not in names:
                names.append(node.name)
                todo += [u for out in node.output for u in users.get(out, [])]
    if "input" in parts:
        for node in graph.node:
            names.append(node.name)
            if node.op_type == "Conv":
                break
    return names


def quantise(
    source: Path,
    target: Path,
    batches: Sequence[rf.FloatArray],
    keep: Sequence[str] = (),
    moving_average: bool = False,
) -> float:
    """ONNX Runtime static quantisation of ``source`` into ``target``; seconds taken. ``keep``:
    parts left in fp32 (kept_in_fp32); ``moving_average``: calibration ranges as a moving
    average over the inputs instead of their overall min and max."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[rf.FloatArray] = iter(batches)

        def get_next(self) -> dict[str, rf.FloatArray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"x": batch}

    start = time.perf_counter()
    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=kept_in_fp32(prepared, keep),
        extra_options={"CalibMovingAverage": moving_average},
    )
    prepared.unlink()
    return time.perf_counter() - start


def model_folder(model: Path, folder: Path) -> models.Installed:
    """A model folder holding ``model`` with the installed graph and a matching manifest."""
    source = models.require()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.graph_path, folder / models.GRAPH_FILE)
    data = model.read_bytes()
    (folder / models.MODEL_FILE).write_bytes(data)
    manifest = replace(source.manifest, model_sha256=models.sha256(data))
    (folder / models.MANIFEST_FILE).write_text(manifest.to_json())
    return models.require(folder)


def detect_each(detector: det.RetinaFace, images: Sequence[RGBImage]) -> Callable[[], object]:
    """A call that detects each image in turn, one at a time."""

    def call() -> None:
        for image in images:
            detector.detect_prepared([image])

    return call


def speed(detectors: dict[str, det.RetinaFace], repeat: int) -> dict[str, Any]:
    """Median ms per detection, int8 against fp32, interleaved: one 1024 x 1024 image, and a
    mixed load (one round detects each of MIXED_SIDES in turn; ms per image)."""
    portrait = det.load_inference_image(harness.DEMO / "astronaut.jpg")[0]
    square = [scaled(portrait, 1024)]
    mixed = [
        det._to_numpy(det._from_numpy(portrait).thumbnail_image(w, height=h, crop="centre"))
        for w, h in MIXED_SIDES
    ]
    results: dict[str, Any] = {}
    for load, images in (("1024x1024", square), ("mixed", mixed)):
        calls = {name: detect_each(d, images) for name, d in detectors.items()}
        for call in calls.values():
            call()
        times = harness.interleaved_ms(calls, repeat)
        per = {name: harness.median(v) / len(images) for name, v in times.items()}
        results[load] = {
            "images_per_round": len(images),
            "median_ms_per_detection": {k: round(v, 2) for k, v in per.items()},
            "ratio": round(per["int8"] / per["fp32"], 3),
        }
        if "fp32-openvino" in per:
            results[load]["ratio_to_openvino_fp32"] = round(per["int8"] / per["fp32-openvino"], 3)
    return results


def widerface(folder: Path | None, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "focal", "eval", "widerface", "--data", str(harness.FACEDATA)]
    command += ["--max-side", "1024", "--runtime", "onnxruntime", "--out", str(out)]
    command += ["--model-dir", str(folder)] if folder else []
    subprocess.run(command, check=True, cwd=harness.ROOT, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    return {"model_id": report["model_id"], **ap_summary(report)}


def ap_summary(report: dict[str, Any]) -> dict[str, Any]:
    """AP, the operating point and the negatives of a focal eval report's first setting."""
    setting = report["settings"][0]
    point = setting["wider"]["operating_point"]
    return {
        "ap": setting["wider"]["ap"],
        "operating_point": {k: point[k] for k in ("threshold", "precision", "recall")},
        "negatives_with_detections": setting["negatives"]["images_with_detections"],
    }


def crop_quality(folder: Path | None, name: str) -> dict[str, float]:
    command = [sys.executable, "benchmarks/crop_quality.py", "--skip-thumbor"]
    command += ["--methods", "focal-face", "--out", name]
    env = dict(os.environ, **({models.ENV_VAR: str(folder)} if folder else {}))
    subprocess.run(command, check=True, cwd=harness.ROOT, env=env, stdout=subprocess.DEVNULL)
    path = harness.RESULTS / f"{name}.json"
    report = json.loads(path.read_text())
    path.unlink()
    summary = report["summary"]
    return {a: summary[a]["methods"]["focal-face"]["all_kept_share"] for a in ASPECTS}


VARIANTS: dict[str, dict[str, Any]] = {
    "heads in fp32": {"keep": ("heads",)},
    "input and first conv in fp32": {"keep": ("input",)},
    "heads, input and first conv in fp32": {"keep": ("heads", "input")},
    "moving-average calibration": {"moving_average": True},
}


def variants(batches: Sequence[rf.FloatArray], work: Path) -> dict[str, Any]:
    """WIDER FACE AP of the recipe's variants (what they change: VARIANTS)."""
    source = models.require().model_path
    results = {}
    for index, (name, options) in enumerate(VARIANTS.items()):
        target = work / f"variant_{index}.onnx"
        quantise(source, target, batches, **options)
        folder = model_folder(target, work / f"variant_{index}")
        results[name] = widerface(folder.directory, work / f"wf_variant_{index}.json")
        print(name, json.dumps(results[name]["ap"]), flush=True)
    return results


def decide(
    ap: dict[str, dict[str, Any]], timing: dict[str, Any], crops: dict[str, Any]
) -> dict[str, Any]:
    drops = {k: round(ap["fp32"]["ap"][k] - ap["int8"]["ap"][k], 2) for k in ap["fp32"]["ap"]}
    offered = all(d <= AP_TOLERANCE for d in drops.values())
    faster = all(timing[load]["ratio"] <= SPEED_RATIO for load in timing)
    crops_held = bool(crops) and all(crops["int8"][a] >= crops["fp32"][a] for a in ASPECTS)
    return {
        "ap_drop_points": drops,
        "ap_within_tolerance": offered,
        "faster": faster,
        "crop_quality_held": crops_held if crops else None,
        "offered": offered,
        "default": offered and faster and crops_held,
    }


NNCF_VARIANTS: dict[str, dict[str, Any]] = {
    "heads in fp32": {"keep": ("heads",)},
    "heads and first conv in fp32": {"keep": ("heads", "stem")},
    "bias correction on all layers": {"fast_bias_correction": False},
}


def quantise_nncf(
    source: Path,
    target: Path,
    batches: Sequence[rf.FloatArray],
    keep: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> float:
    """NNCF post-training quantisation of the OpenVINO model read from ``source``, saved as an
    IR at ``target`` (.xml, weights beside it); seconds taken. ``keep``: "heads" (the nine head
    convolutions, whose outputs have 4, 8 or 20 channels) and "stem" (the first convolution)
    left in fp32."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(source))
    convs = [o for o in model.get_ordered_ops() if o.get_type_name().endswith("Convolution")]
    ignored = []
    if "heads" in keep:
        heads = [o for o in convs if o.get_output_partial_shape(0)[1].get_length() in (4, 8, 20)]
        ignored += [o.get_friendly_name() for o in heads]
    if "stem" in keep:
        ignored.append(convs[0].get_friendly_name())
    start = time.perf_counter()
    quantised = nncf.quantize(
        model,
        nncf.Dataset(list(batches)),
        subset_size=len(batches),
        fast_bias_correction=fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
    )
    seconds = time.perf_counter() - start
    ov.save_model(quantised, str(target), compress_to_fp16=False)
    return seconds


def widerface_ir(ir: Path, out: Path) -> dict[str, Any]:
    """WIDER FACE AP at the 1024 cap of an OpenVINO IR: focal eval's evaluation in this
    process, with every session it opens opened on the IR (fp32 hint: the IR's int8 layers run
    in int8, the rest in fp32)."""
    from focal.commands import eval as evaluation

    parser = argparse.ArgumentParser()
    evaluation.register(parser.add_subparsers())
    data = str(harness.FACEDATA)
    args = parser.parse_args(
        ["eval", "widerface", "--data", data, "--max-side", "1024", "--out", str(out)]
    )

    def on_ir(*_: Any, **__: Any) -> OpenVinoSession:
        return OpenVinoSession(ir, "fp32")

    with mock.patch.object(sessions, "open_session", on_ir):
        report = evaluation.evaluate(args, lambda _: None)
    return {"model": ir.name, **ap_summary(report)}


def nncf_openvino(args: argparse.Namespace) -> int:
    """The nncf-openvino recipe: quantise, time against fp32 (ONNX Runtime, focal's default,
    and OpenVINO), measure AP; results in int8_openvino.json."""
    fp32 = models.require()
    with tempfile.TemporaryDirectory(prefix="focal-int8-ov-") as temporary:
        work = Path(temporary)
        paths = calibration_paths()
        batches = calibration_batches(paths, CALIBRATION_SIDES)
        ir = work / "int8.xml"
        seconds = quantise_nncf(fp32.model_path, ir, batches)
        print(f"quantised in {seconds:.1f} s from {len(batches)} calibration inputs", flush=True)
        sha = fp32.manifest.model_sha256
        detectors = {
            "fp32": det.RetinaFace(OnnxRuntimeSession(fp32.model_path), sha),
            "fp32-openvino": det.RetinaFace(OpenVinoSession(fp32.model_path, "fp32"), sha),
            "int8": det.RetinaFace(OpenVinoSession(ir, "fp32"), "int8"),
        }
        timing = speed(detectors, args.repeat)
        print(json.dumps(timing), flush=True)
        ap = {
            "fp32": widerface(None, work / "wf_fp32.json"),
            "int8": widerface_ir(ir, work / "wf_int8.json"),
        }
        print(json.dumps(ap), flush=True)
        tried = {}
        if args.nncf_variants:
            for index, (name, options) in enumerate(NNCF_VARIANTS.items()):
                target = work / f"variant_{index}.xml"
                quantise_nncf(fp32.model_path, target, batches, **options)
                tried[name] = widerface_ir(target, work / f"wf_variant_{index}.json")
                print(name, json.dumps(tried[name]["ap"]), flush=True)
        bytes_int8 = ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
    import nncf
    import openvino as ov

    result = {
        "recipe": "nncf.quantize on the OpenVINO model (performance preset: symmetric int8 "
        "weights and activations, fast bias correction), run with OpenVINO",
        "versions": {"nncf": nncf.__version__, "openvino": ov.get_version()},
        "calibration": {
            "images": [str(p.relative_to(p.parents[1])) for p in paths],
            "sides": list(CALIBRATION_SIDES),
            "inputs": len(batches),
        },
        "int8_model_bytes": bytes_int8,
        "fp32_model_bytes": fp32.model_path.stat().st_size,
        "quantise_seconds": round(seconds, 1),
        "repeat": args.repeat,
        "speed": timing,
        "widerface_1024_cap": ap,
        "crop_quality_all_kept_share": "not measured: the AP bar decides first",
        "decision": decide(ap, timing, {}),
        "variants_widerface_1024_cap": tried,
    }
    print(json.dumps(result["decision"]))
    harness.write_result("int8_openvino", result, COMMAND)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per configuration")
    parser.add_argument("--skip-crop-quality", action="store_true")
    parser.add_argument(
        "--variants", action="store_true", help="also the AP of the variants (VARIANTS)"
    )
    parser.add_argument("--recipe", choices=("onnxruntime", "nncf-openvino"), default="onnxruntime")
    parser.add_argument(
        "--nncf-variants", action="store_true", help="nncf-openvino: also NNCF_VARIANTS' AP"
    )
    args = parser.parse_args(argv)
    if args.recipe == "nncf-openvino":
        return nncf_openvino(args)
    fp32 = models.require()
    with tempfile.TemporaryDirectory(prefix="focal-int8-") as temporary:
        work = Path(temporary)
        paths = calibration_paths()
        batches = calibration_batches(paths, CALIBRATION_SIDES)
        seconds = quantise(fp32.model_path, work / "int8.onnx", batches)
        int8 = model_folder(work / "int8.onnx", work / "model")
        print(f"quantised in {seconds:.1f} s from {len(batches)} calibration inputs", flush=True)
        detectors = {
            "fp32": det.RetinaFace(OnnxRuntimeSession(fp32.model_path), fp32.manifest.model_sha256),
            "int8": det.RetinaFace(OnnxRuntimeSession(int8.model_path), int8.manifest.model_sha256),
        }
        timing = speed(detectors, args.repeat)
        print(json.dumps(timing), flush=True)
        ap = {
            "fp32": widerface(None, work / "wf_fp32.json"),
            "int8": widerface(int8.directory, work / "wf_int8.json"),
        }
        print(json.dumps(ap), flush=True)
        crops: dict[str, Any] = {}
        if not args.skip_crop_quality:
            crops = {
                "fp32": crop_quality(None, "int8_crop_quality_fp32"),
                "int8": crop_quality(int8.directory, "int8_crop_quality_int8"),
            }
            print(json.dumps(crops), flush=True)
        tried = variants(batches, work) if args.variants else {}
        result = {
            "recipe": "onnxruntime quantize_static, QDQ, weights int8 per channel, "
            "activations uint8 per tensor, MinMax calibration",
            "calibration": {
                "images": [str(p.relative_to(p.parents[1])) for p in paths],
                "sides": list(CALIBRATION_SIDES),
                "inputs": len(batches),
                "overlap": "none with the WIDER FACE AP images; astronaut and grace_hopper "
                "are also singles of the crop-quality set",
            },
            "int8_model_sha256": int8.manifest.model_sha256,
            "int8_model_bytes": int8.model_path.stat().st_size,
            "fp32_model_bytes": fp32.model_path.stat().st_size,
            "quantise_seconds": round(seconds, 1),
            "repeat": args.repeat,
            "speed": timing,
            "widerface_1024_cap": ap,
            "crop_quality_all_kept_share": crops,
            "decision": decide(ap, timing, crops),
            "variants_widerface_1024_cap": tried,
        }
    print(json.dumps(result["decision"]))
    harness.write_result("int8", result, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
