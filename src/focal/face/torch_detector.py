"""The face detector on PyTorch (for GPUs; also runs on the CPU), from the converted ONNX model.

    TorchDetector   focal.detection.Detector over the translated network
                    (focal.face.torch_graph): images grouped by padded size, each group
                    pre-processed (upload, resize to the inference cap, pad), run, decoded and
                    suppressed (NMS, focal.face.torch_postprocess) on the device as one batch;
                    the model is loaded at the first detect and released after
                    `idle_offload_s` without requests
    load_torch_detector(...)   the factory (keyword arguments only)

Anchors, thresholds, the cap and the mapping back to the input's pixels come from
focal.face.retinaface, so the ONNX Runtime detector and this one answer alike. This module
imports torch; only focal.face.sessions imports this module, and only when the torch runtime is
asked for (torch is the `gpu` extra).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focal.detection import Face, RGBImage
from focal.errors import TorchRuntimeError
from focal.face import models, retinaface
from focal.face.torch_graph import OnnxModule, load_module
from focal.face.torch_postprocess import decode_batch
from focal.geometry import INFERENCE_CAP

log = logging.getLogger("focal.detector")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_ALIASES = {"f16": "fp16"}  # focal.face.sessions' spelling
DEVICES = ("auto", "cuda", "cpu")
GRAPH_CACHE_SIZE = 16  # captured CUDA graphs kept (one per batch size and padded shape)

# --- batching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Images (by their index in the request) that share one padded inference size."""

    height: int
    width: int
    indices: tuple[int, ...]


def inference_shape(image: RGBImage, cap: int = INFERENCE_CAP) -> tuple[int, int]:
    """(height, width) detection runs at for this image (SPEC section 2, step 1)."""
    width, height = retinaface.inference_size(int(image.shape[1]), int(image.shape[0]), cap)
    return height, width


def plan_batches(shapes: Sequence[tuple[int, int]], max_batch: int) -> list[Batch]:
    """Inference shapes (height, width) grouped by padded size, in order of first appearance,
    each group cut into batches of at most max_batch; within a batch, the request's order."""
    groups: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
    for index, (height, width) in enumerate(shapes):
        groups.setdefault(retinaface.padded_size(height, width), []).append(index)
    return [
        Batch(height, width, tuple(indices[start : start + max_batch]))
        for (height, width), indices in groups.items()
        for start in range(0, len(indices), max_batch)
    ]


def check_image(image: RGBImage) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")


# --- the detector -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchSettings:
    """How the model runs.

    device          auto (cuda when available, else cpu), cuda, cuda:N or cpu
    precision       fp32, fp16 (alias f16) or bf16; the scores' softmax is always float32
    max_batch       most images in one forward pass (larger requests are split)
    channels_last   convolutions in NHWC layout (the fast one for cuDNN with fp16)
    compile         torch.compile the module (compiles once per batch shape)
    compile_mode    torch.compile's mode: default, max-autotune, max-autotune-no-cudagraphs
    cuda_graphs     replay a captured CUDA graph per (batch size, padded shape); batches are
                    padded up to a power of two to bound the number of graphs
    idle_offload_s  release the model and its device memory after this many seconds without a
                    request; None keeps it loaded
    cudnn_benchmark let cuDNN time its algorithms once per input shape (CUDA only); each new
                    shape then pays the timing on its first batch, so it is off by default:
                    requests come in many padded sizes and batch counts"""

    device: str = "auto"
    precision: str = "fp32"
    max_batch: int = 32
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    idle_offload_s: float | None = 300.0
    cudnn_benchmark: bool = False


DEFAULT_SETTINGS = retinaface.Settings()
DEFAULT_OPTIONS = TorchSettings()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES[1:]:
        raise TorchRuntimeError(f"unknown device {name!r}: expected auto, cuda, cuda:N or cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TorchRuntimeError("device cuda asked for, but torch finds no CUDA device")
    return device


def resolve_precision(name: str) -> str:
    precision = PRECISION_ALIASES.get(name, name)
    if precision not in DTYPES:
        raise TorchRuntimeError(f"unknown precision {name!r}: expected one of {sorted(DTYPES)}")
    return precision


class _GraphRunner:
    """One captured CUDA graph of the module for one input shape."""

    def __init__(self, module: nn.Module, example: Tensor, pool: Any) -> None:
        self.input = example.clone()
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                module(self.input)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs: tuple[Tensor, ...] = module(self.input)

    def __call__(self, batch: Tensor) -> tuple[Tensor, ...]:
        self.input.copy_(batch)
        self.graph.replay()
        return self.outputs


@dataclass
class _Loaded:
    """What a loaded detector holds on its device (all of it released on offload)."""

    module: OnnxModule
    forward: Callable[[Tensor], tuple[Tensor, ...]]
    priors: dict[tuple[int, int], Tensor] = field(default_factory=dict)
    graphs: OrderedDict[tuple[int, ...], _GraphRunner] = field(default_factory=OrderedDict)
    graph_pool: Any = None


def _pad_count(count: int, max_batch: int) -> int:
    """The batch size a CUDA graph runs for `count` images: the next power of two, capped."""
    size = 1
    while size < count:
        size *= 2
    return min(size, max(max_batch, count))


class TorchDetector:
    """The RetinaFace detector (focal.detection.Detector) on PyTorch."""

    def __init__(
        self,
        model_path: Path,
        model_sha256: str,
        settings: retinaface.Settings = DEFAULT_SETTINGS,
        options: TorchSettings = DEFAULT_OPTIONS,
    ) -> None:
        if options.max_batch < 1:
            raise TorchRuntimeError(f"max_batch must be at least 1, got {options.max_batch}")
        self.model_path = model_path
        self.settings = settings
        self.options = options
        self.precision = resolve_precision(options.precision)
        self.device = resolve_device(options.device)
        self.dtype = DTYPES[self.precision]
        self._model_sha256 = model_sha256
        self._lock = threading.RLock()
        self._loaded: _Loaded | None = None
        self._last_used = 0.0
        self._closed = threading.Event()
        self.loads = 0  # times the model was loaded (the first detect, then after each offload)
        self.cold_start_s: float | None = None  # seconds the last load took

    @property
    def max_side(self) -> int:
        return self.settings.max_side

    @property
    def model_id(self) -> str:
        """As the CPU detector's: fp32 gives the same faces as the CPU runtimes."""
        tag = "" if self.precision == "fp32" else f"torch-{self.precision}"
        return retinaface.model_id(self._model_sha256, self.settings, tag)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    # -- loading and offloading -----------------------------------------------------------------

    def load(self) -> None:
        """Load the model now (detect does it on demand)."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> _Loaded:
        if self._loaded is None:
            start = time.perf_counter()
            self._loaded = self._build()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.cold_start_s = time.perf_counter() - start
            self.loads += 1
            self._last_used = time.monotonic()
            log.info(
                "torch detector loaded on %s (%s) in %.0f ms",
                self.device,
                self.precision,
                self.cold_start_s * 1000,
            )
            self._start_idle_watch(self._loaded)
        return self._loaded

    def _build(self) -> _Loaded:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
        if self.device.type == "cuda" and self.dtype == torch.float32:
            # fp32 means fp32: TF32 convolutions would move scores by about 1e-2
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        layout = torch.channels_last if self.options.channels_last else torch.contiguous_format
        module = load_module(self.model_path).to(self.device, self.dtype)
        module = module.set_memory_format(layout)
        forward: Callable[[Tensor], tuple[Tensor, ...]] = module
        if self.options.compile:
            mode = "reduce-overhead" if self.options.cuda_graphs else self.options.compile_mode
            forward = torch.compile(module, mode=mode, dynamic=False)
        loaded = _Loaded(module=module, forward=forward)
        if self.options.cuda_graphs and not self.options.compile and self.device.type == "cuda":
            loaded.graph_pool = torch.cuda.graph_pool_handle()
        return loaded

    def unload(self) -> bool:
        """Release the model and its device memory now; whether it was loaded."""
        with self._lock:
            if self._loaded is None:
                return False
            self._loaded = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                torch.cuda.empty_cache()
            return True

    def close(self) -> None:
        """Release the model and stop the idle watch for good."""
        self._closed.set()
        self.unload()

    def _start_idle_watch(self, loaded: _Loaded) -> None:
        if self.options.idle_offload_s is None:
            return
        watch = threading.Thread(
            target=self._idle_watch, args=(loaded,), name="focal-torch-idle", daemon=True
        )
        watch.start()

    def _idle_watch(self, loaded: _Loaded) -> None:
        idle = float(self.options.idle_offload_s or 0.0)
        while not self._closed.is_set():
            with self._lock:
                if self._loaded is not loaded:
                    return
                remaining = self._last_used + idle - time.monotonic()
                if remaining <= 0:
                    self.unload()
                    log.info("torch detector released after %.1f s idle", idle)
                    return
            self._closed.wait(remaining)

    # -- detection ------------------------------------------------------------------------------

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        """Faces for each RGB image (H x W x 3 uint8), in that image's own coordinates."""
        for image in images:
            check_image(image)
        if not images:
            return []
        shapes = [inference_shape(image, self.settings.max_side) for image in images]
        results: list[list[Face]] = [[] for _ in images]
        with self._lock, torch.inference_mode():
            loaded = self._ensure_loaded()
            for batch in plan_batches(shapes, self.options.max_batch):
                chosen = [images[i] for i in batch.indices]
                found = self._run(loaded, batch, chosen, [shapes[i] for i in batch.indices])
                for index, faces in zip(batch.indices, found, strict=True):
                    results[index] = faces
            self._last_used = time.monotonic()
        return results

    def _run(
        self,
        loaded: _Loaded,
        batch: Batch,
        images: Sequence[RGBImage],
        shapes: Sequence[tuple[int, int]],
    ) -> list[list[Face]]:
        tensor = self.prepare(images, shapes, batch)
        outputs = self._forward(loaded, tensor)
        found = decode_batch(outputs, self._priors(loaded, batch), self.settings, len(images))
        return [
            retinaface.to_faces(found.detections(k), i.shape[1] / w, i.shape[0] / h)
            for k, (i, (h, w)) in enumerate(zip(images, shapes, strict=True))
        ]

    def prepare(
        self, images: Sequence[RGBImage], shapes: Sequence[tuple[int, int]], batch: Batch
    ) -> Tensor:
        """One NHWC batch in the model's dtype on the device: each image uploaded as uint8,
        resized there to its inference shape when larger than the cap, at the top-left of a
        zero canvas of the batch's padded size."""
        count = len(images)
        if self.options.cuda_graphs and self.device.type == "cuda":
            count = _pad_count(count, self.options.max_batch)
        canvas = torch.zeros(
            (count, batch.height, batch.width, 3), dtype=self.dtype, device=self.device
        )
        for k, (image, (height, width)) in enumerate(zip(images, shapes, strict=True)):
            canvas[k, :height, :width] = self._upload(image, height, width)
        return canvas

    def _upload(self, image: RGBImage, height: int, width: int) -> Tensor:
        # uint8 goes over the bus (a quarter of float32); pinning each image first would add a
        # copy and grow torch's cache of pinned host memory in the worker's resident memory
        pixels = from_numpy(np.ascontiguousarray(image[..., :3])).to(self.device)
        if pixels.shape[:2] == (height, width):
            return pixels.to(self.dtype)
        return resize(pixels, height, width).to(self.dtype)

    def _forward(self, loaded: _Loaded, batch: Tensor) -> tuple[Tensor, ...]:
        if loaded.graph_pool is None:
            return loaded.forward(batch)
        key = tuple(batch.shape)
        runner = loaded.graphs.get(key)
        if runner is None:
            runner = _GraphRunner(loaded.module, batch, loaded.graph_pool)
            loaded.graphs[key] = runner
            if len(loaded.graphs) > GRAPH_CACHE_SIZE:
                loaded.graphs.popitem(last=False)
        loaded.graphs.move_to_end(key)
        return runner(batch)

    def _priors(self, loaded: _Loaded, batch: Batch) -> Tensor:
        key = (batch.height, batch.width)
        if key not in loaded.priors:
            anchors = retinaface.anchors(batch.height, batch.width)
            loaded.priors[key] = torch.from_numpy(anchors).to(self.device)
        return loaded.priors[key]

    def network(self) -> OnnxModule:
        """The loaded network (loading it first), as `detect` runs it: for profiling."""
        with self._lock:
            return self._ensure_loaded().module

    def run_model(self, batch: Tensor) -> tuple[Tensor, ...]:
        """The network alone on an NHWC batch already on the device (for benchmarks)."""
        with self._lock, torch.inference_mode():
            outputs = self._forward(self._ensure_loaded(), batch.to(self.device, self.dtype))
            self._last_used = time.monotonic()
            return outputs


def from_numpy(array: np.ndarray[Any, Any]) -> Tensor:
    """A tensor sharing the array's memory; read-only arrays too (the tensor is only read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def resize(pixels: Tensor, height: int, width: int) -> Tensor:
    """An H x W x 3 uint8 image on the device scaled to height x width: antialiased bicubic
    (the closest of torch's filters to the lanczos3 of the CPU path's libvips resize), rounded
    back to 0..255 as the CPU path's uint8 copy is."""
    planar = pixels.permute(2, 0, 1)[None].float()
    scaled = F.interpolate(
        planar, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
    return scaled[0].permute(1, 2, 0).round().clamp(0, 255)


# --- the factory ------------------------------------------------------------------------------


def load_torch_detector(
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "auto",
    precision: str = "fp32",
    score_threshold: float = 0.5,
    nms_iou: float = 0.4,
    max_batch: int = 32,
    idle_offload_s: float | None = 300.0,
    max_side: int = INFERENCE_CAP,
    channels_last: bool = True,
    compile: bool = False,
    cuda_graphs: bool = False,
    cudnn_benchmark: bool = False,
) -> TorchDetector:
    """The torch detector over the installed model (ModelMissingError when `focal models fetch`
    has not been run), or over model_path, a converted model file, when given. Nothing is loaded
    until the first detect."""
    if model_path is None:
        installed = models.require(model_dir)
        path, sha = installed.model_path, installed.manifest.model_sha256
    else:
        path, sha = model_path, models.file_sha256(model_path)
    options = TorchSettings(
        device=device,
        precision=precision,
        max_batch=max_batch,
        channels_last=channels_last,
        compile=compile,
        cuda_graphs=cuda_graphs,
        idle_offload_s=idle_offload_s,
        cudnn_benchmark=cudnn_benchmark,
    )
    settings = retinaface.Settings(
        score_threshold=score_threshold, nms_iou=nms_iou, max_side=max_side
    )
    return TorchDetector(path, sha, settings, options)
