"""Sessions and detectors: the one module that chooses an inference runtime and imports it.

    onnxruntime  ONNX Runtime, CPU execution provider, fp32 (the baseline)
    openvino     OpenVINO CPU plugin; fp32, or bf16 / f16 through its inference-precision
                 hint where the CPU supports it
    torch        focal.face.torch_detector (the ``gpu`` extra), imported only when asked for

A session runs one NHWC float32 batch and returns the network's raw per-anchor outputs
(focal.face.retinaface.Session). ``DetectorConfig`` is how every caller (the CLI, the server's
detector workers) describes the detector it wants, and ``open_detector`` builds it. The default
runtime ("auto") is ONNX Runtime at fp32 (OpenVINO for bf16 / f16): under a load of mixed image
sizes it holds the detector worker's memory to about 350 MiB, where OpenVINO's per-shape
compilations and caches grow it past 450 MiB to 1.3 GiB
(benchmarks/experiments/detector_memory.py, docs/detector.md).

Importing this module imports no runtime: each is imported where a session is opened, so the
server process can read the names below without loading one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from focal.errors import RuntimeChoiceError
from focal.face.retinaface import OUTPUT_NAMES, RawOutputs, Session, Settings, raw_outputs
from focal.geometry import INFERENCE_CAP

if TYPE_CHECKING:
    from focal.detection import Detector
    from focal.face.detector import RetinaFace

FloatArray = npt.NDArray[np.float32]
CPU_RUNTIMES = ("auto", "onnxruntime", "openvino")
RUNTIMES = (*CPU_RUNTIMES, "torch")
PRECISIONS = ("fp32", "bf16", "f16")
DEFAULT_RUNTIME = "onnxruntime"  # for fp32; bf16 and f16 need OpenVINO
DEFAULT_PRECISION = "fp32"
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "f16": "f16"}
OPENVINO_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
MIN_MAX_SIDE = 256  # the smallest detection side offered (detector_max_side)


SPINNING = "session.intra_op.allow_spinning"  # ONNX Runtime's session config key


class OnnxRuntimeSession:
    """ONNX Runtime on the CPU.

    Its memory arena stays on (the buffers of one run are reused by the next); its memory
    pattern, a buffer plan cached per input shape, is off by default: under a load of many image
    sizes the plans pile up (the detector worker reached 534 MiB after 80 distinct shapes with
    it, 351 MiB without, at the same speed; docs/detector.md). Its worker threads do not spin:
    a spinning thread keeps polling for work between and after runs, CPU the image threads of
    a busy server need (benchmarks/face_cost.py, docs/detector.md).
    """

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(
        self,
        model_path: Path,
        threads: int = 0,
        memory_arena: bool = True,
        memory_pattern: bool = False,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry(SPINNING, "1" if spinning else "0")
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = memory_arena
        options.enable_mem_pattern = memory_pattern
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: FloatArray) -> RawOutputs:
        return raw_outputs(self._session.run(list(OUTPUT_NAMES), {"x": batch}))


def _openvino_core() -> Any:
    import openvino as ov

    return ov.Core()


def openvino_precisions() -> tuple[str, ...]:
    """The precisions OpenVINO's CPU plugin can run on this machine."""
    capabilities = set(_openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ("fp32", *(p for p, c in OPENVINO_CAPABILITY.items() if c in capabilities))


class OpenVinoSession:
    """OpenVINO on the CPU, with an inference-precision hint.

    The model has dynamic input sizes. With ``static_shapes`` > 0, an input shape seen a second
    time gets a compilation of its own (a few hundred ms, once), kept for the ``static_shapes``
    most recently used shapes; other shapes run on the dynamic compilation. A static compilation
    runs its shape a little faster, but holds its own working memory (about 75 MiB plus the
    activations of its shape, 135 MiB at 1024 x 1024): under a load of mixed sizes, eight of them
    took the detector worker past 1.2 GiB (docs/detector.md), so the default is none.
    """

    runtime = "openvino"

    def __init__(
        self,
        model_path: Path,
        precision: str = "fp32",
        threads: int = 0,
        static_shapes: int = 0,
    ) -> None:
        if precision not in openvino_precisions():
            raise RuntimeChoiceError(f"this CPU cannot run OpenVINO at {precision}")
        self.precision = precision
        self._core = _openvino_core()
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._model_path = model_path
        self._dynamic = self._compile(None)
        self._static: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._seen: set[tuple[int, ...]] = set()
        self._static_shapes = static_shapes

    def configure(self, overrides: Mapping[str, Any]) -> None:
        """Change OpenVINO compile properties (e.g. PERFORMANCE_HINT) and compile again."""
        self._config.update(overrides)
        self._static.clear()
        self._seen.clear()
        self._dynamic = self._compile(None)

    def _compile(self, shape: tuple[int, ...] | None) -> Any:
        model = self._core.read_model(str(self._model_path))
        if shape is not None:
            model.reshape({model.input(0).get_any_name(): list(shape)})
        compiled = self._core.compile_model(model, "CPU", self._config)
        return compiled, compiled.create_infer_request()

    def _for_shape(self, shape: tuple[int, ...]) -> Any:
        if shape in self._static:
            self._static.move_to_end(shape)
            return self._static[shape]
        if shape not in self._seen or self._static_shapes == 0:
            self._seen.add(shape)
            return self._dynamic
        self._static[shape] = self._compile(shape)
        while len(self._static) > self._static_shapes:
            self._static.popitem(last=False)
        return self._static[shape]

    def run(self, batch: FloatArray) -> RawOutputs:
        compiled, request = self._for_shape(tuple(batch.shape))
        result = request.infer([np.ascontiguousarray(batch)])
        return raw_outputs([result[compiled.output(name)] for name in OUTPUT_NAMES])


def resolve(runtime: str, precision: str) -> tuple[str, str]:
    """The concrete (runtime, precision) for a request, "auto" replaced by the default."""
    if runtime not in CPU_RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {runtime!r}: expected one of {CPU_RUNTIMES}")
    if precision not in PRECISIONS:
        raise RuntimeChoiceError(f"unknown precision {precision!r}: expected one of {PRECISIONS}")
    if runtime == "auto":
        chosen = DEFAULT_RUNTIME if precision == "fp32" else "openvino"
    else:
        chosen = runtime
    if chosen == "onnxruntime" and precision != "fp32":
        raise RuntimeChoiceError("onnxruntime runs this model at fp32 only")
    return chosen, precision


def open_session(
    model_path: Path, runtime: str = "auto", precision: str = DEFAULT_PRECISION, threads: int = 0
) -> Session:
    """An inference session for the converted model; threads=0 lets the runtime decide."""
    chosen, precision = resolve(runtime, precision)
    if chosen == "onnxruntime":
        return OnnxRuntimeSession(model_path, threads)
    return OpenVinoSession(model_path, precision, threads)


class FrozenGraphReference:
    """The original frozen TensorFlow graph run by OpenVINO's own TensorFlow frontend, in fp32:
    an independent reference for the converted model. Returns the graph's final output: one row
    per face after its in-graph decode and NMS (x1, y1, x2, y2, 5 landmarks as x, y, a
    constant 1, score), coordinates as fractions of the padded input's width and height."""

    def __init__(self, graph_path: Path) -> None:
        core = _openvino_core()
        model = core.read_model(str(graph_path))
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(self, image: FloatArray) -> FloatArray:
        """Output rows for one NHWC float32 image [1, H, W, 3]."""
        result = self._compiled([np.ascontiguousarray(image)])
        return np.asarray(result[self._compiled.output(0)], dtype=np.float32)


HEAD_OUTPUTS = (
    "RetinaFaceModel/tf_op_layer_concat/concat",
    "RetinaFaceModel/tf_op_layer_concat_1/concat_1",
    "RetinaFaceModel/softmax/Softmax",
)


class FrozenGraphHeads:
    """The original frozen graph, cut at its three heads (box deltas, landmark deltas, class
    softmax) by OpenVINO's TensorFlow frontend and run in fp32: the same raw outputs as the
    converted model, for focal's own decoding and NMS."""

    runtime = "openvino-tensorflow-frontend"
    precision = "fp32"

    def __init__(self, graph_path: Path) -> None:
        import openvino as ov
        from openvino.frontend import FrontEndManager

        frontend = FrontEndManager().load_by_framework("tf")
        model = frontend.load(str(graph_path))
        model.override_all_outputs([model.get_place_by_tensor_name(n) for n in HEAD_OUTPUTS])
        compiled = ov.Core().compile_model(
            frontend.convert(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        self._compiled = compiled

    def run(self, batch: FloatArray) -> RawOutputs:
        result = self._compiled([np.ascontiguousarray(batch)])
        boxes, landmarks, classes = (
            np.asarray(result[o], np.float32) for o in self._compiled.outputs
        )
        return RawOutputs(boxes=boxes, landmarks=landmarks, scores=classes[..., 1])


# --- detectors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    """Which detector to build: the one description the CLI and the server's workers share.

    runtime          auto, onnxruntime, openvino (CPU) or torch (the ``gpu`` extra)
    precision        fp32, bf16 or f16 (f16/bf16: openvino where the CPU has them, or torch)
    device           torch only: auto, cpu, cuda or cuda:N
    idle_offload_s   torch only: release the model after this long idle (0: keep it)
    max_batch        torch only: most images in one forward pass
    score_threshold / nms_iou   focal.face.retinaface.Settings
    crop_threshold   CPU runtimes only: what counts as a face for a face crop (docs/cropping.md)
    flip             CPU runtimes only: also detect on the mirrored image (docs/detector.md)
    max_side         the most pixels per side detection runs on (at most the published 1024;
                     smaller is faster and finds fewer small faces, docs/detector.md)"""

    model_dir: Path | None = None
    runtime: str = "auto"
    precision: str = DEFAULT_PRECISION
    device: str = "auto"
    idle_offload_s: float = 300.0
    max_batch: int = 32
    score_threshold: float = Settings.score_threshold
    nms_iou: float = Settings.nms_iou
    crop_threshold: float = Settings.crop_threshold
    flip: bool = Settings.flip
    max_side: int = Settings.max_side

    def factory_args(self) -> tuple[tuple[str, object], ...]:
        """Keyword arguments of FACTORY (picklable), for a detector built in another process."""
        return tuple(asdict(self).items())


FACTORY = "focal.face.sessions:build_detector"  # "module:function" a detector worker calls


def build_detector(**fields: Any) -> Detector:
    """open_detector(DetectorConfig(**fields)): the detector worker's factory (FACTORY)."""
    return open_detector(DetectorConfig(**fields))


def check_max_side(max_side: int) -> None:
    """Refuse a detection side outside MIN_MAX_SIDE..INFERENCE_CAP (RuntimeChoiceError)."""
    if not MIN_MAX_SIDE <= max_side <= INFERENCE_CAP:
        raise RuntimeChoiceError(
            f"max_side {max_side}: expected {MIN_MAX_SIDE} to {INFERENCE_CAP} pixels "
            "(detection never runs on more than the published 1024 cap)"
        )


def load_detector(
    model_dir: Path | None = None,
    runtime: str = "auto",
    precision: str = DEFAULT_PRECISION,
    score_threshold: float = Settings.score_threshold,
    nms_iou: float = Settings.nms_iou,
    flip: bool = Settings.flip,
    crop_threshold: float = Settings.crop_threshold,
    max_side: int = Settings.max_side,
) -> RetinaFace:
    """The CPU detector over the installed model (ModelMissingError when `focal models fetch`
    has not been run). runtime: auto, onnxruntime or openvino; precision: fp32, bf16 or f16
    (openvino only); flip: a second, mirrored pass merged by NMS; crop_threshold: what counts
    as a face for a face crop (weak candidates below it, docs/cropping.md); max_side: the most
    pixels per side detection runs on."""
    from focal.face import models
    from focal.face.detector import RetinaFace

    check_max_side(max_side)
    installed = models.require(model_dir)
    session = open_session(installed.model_path, runtime, precision)
    settings = Settings(
        score_threshold=score_threshold,
        nms_iou=nms_iou,
        crop_threshold=crop_threshold,
        flip=flip,
        max_side=max_side,
    )
    return RetinaFace(session, installed.manifest.model_sha256, settings)


def open_detector(config: DetectorConfig = DetectorConfig()) -> Detector:
    """The detector a config describes: torch (focal.face.torch_detector, imported only here
    and only then) or a CPU runtime (load_detector)."""
    if config.runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {config.runtime!r}: expected one of {RUNTIMES}")
    if config.runtime != "torch":
        return load_detector(
            config.model_dir,
            config.runtime,
            config.precision,
            config.score_threshold,
            config.nms_iou,
            config.flip,
            config.crop_threshold,
            config.max_side,
        )
    if config.flip:
        raise RuntimeChoiceError("the mirrored pass (flip) runs on the CPU runtimes only")
    from focal.face.torch_detector import load_torch_detector  # the optional dependency

    check_max_side(config.max_side)
    return load_torch_detector(
        config.model_dir,
        device=config.device,
        precision=config.precision,
        score_threshold=config.score_threshold,
        nms_iou=config.nms_iou,
        idle_offload_s=config.idle_offload_s if config.idle_offload_s > 0 else None,
        max_batch=config.max_batch,
        max_side=config.max_side,
    )
