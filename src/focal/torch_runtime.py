"""The face detector on PyTorch (for GPUs; also runs on the CPU), from the converted ONNX model.

    OnnxModule      the converted ONNX graph translated node by node into a torch.nn.Module: the
                    model file is the one source of truth, no network is written out by hand
    TorchDetector   focal.detection.Detector over it: images grouped by padded size, each group
                    pre-processed (upload, resize to the 1024 cap, pad), run, decoded and
                    suppressed (NMS) on the device as one batch; the model is loaded at the first
                    detect and released after `idle_offload_s` without requests
    load_torch_detector(...)   the factory (keyword arguments only, for the detector worker)

Anchors, thresholds, the cap and the mapping back to the input's pixels come from
focal.retinaface, so the ONNX Runtime detector and this one answer alike. This module imports
torch; nothing in focal's default install imports this module (torch is the `gpu` extra).
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
from typing import Any, ClassVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor, nn

from focal import models, retinaface
from focal.detection import Face, RGBImage
from focal.errors import FocalError

log = logging.getLogger("focal.detector")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_ALIASES = {"f16": "fp16"}  # focal.runtime's spelling
DEVICES = ("auto", "cuda", "cpu")
OUTPUT_NAMES = ("boxes", "landmarks", "scores")
GRAPH_CACHE_SIZE = 16  # captured CUDA graphs kept (one per batch size and padded shape)

Constant = Tensor | float
Nms = Callable[[Tensor, Tensor, Tensor, float], Tensor]


class GraphError(FocalError):
    """The ONNX graph holds something this translator does not run."""


class TorchRuntimeError(FocalError):
    """An unknown precision or device, or a device this machine does not have."""


# --- the translator ---------------------------------------------------------------------------


class Conv(nn.Module):
    """ONNX Conv (2-D, any groups); asymmetric pads (TensorFlow's SAME) are padded explicitly."""

    def __init__(self, weight: Tensor, bias: Tensor | None, attrs: dict[str, Any]) -> None:
        super().__init__()
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        symmetric = (top, left) == (bottom, right)
        self.pad = (0, 0, 0, 0) if symmetric else (left, right, top, bottom)
        self.conv = nn.Conv2d(
            in_channels=weight.shape[1] * int(attrs.get("group", 1)),
            out_channels=weight.shape[0],
            kernel_size=(int(weight.shape[2]), int(weight.shape[3])),
            stride=tuple(attrs.get("strides", [1, 1])),
            padding=(top, left) if symmetric else 0,
            dilation=tuple(attrs.get("dilations", [1, 1])),
            groups=int(attrs.get("group", 1)),
            bias=bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            if bias is not None and self.conv.bias is not None:
                self.conv.bias.copy_(bias)
        self.conv.requires_grad_(False)
        self.memory_format = torch.channels_last

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        if any(self.pad):
            x = F.pad(x, self.pad)
        out: Tensor = self.conv(x)
        return out


class Elementwise(nn.Module):
    """Add, Sub, Mul, Div: operands from the graph at run time, or constants (scalars as floats,
    tensors as buffers that follow the module's dtype and device)."""

    OPS: ClassVar[dict[str, Callable[[Any, Any], Tensor]]] = {
        "Add": torch.add,
        "Sub": torch.sub,
        "Mul": torch.mul,
        "Div": torch.div,
    }

    def __init__(self, op: str, constants: Sequence[Constant | None]) -> None:
        super().__init__()
        self.op = self.OPS[op]
        self.scalars: list[float | None] = []
        self.slots: list[str] = []  # per operand: "input", "scalar" or a buffer name
        for index, value in enumerate(constants):
            if value is None:
                self.slots.append("input")
            elif isinstance(value, float):
                self.slots.append("scalar")
            else:
                name = f"constant{index}"
                self.register_buffer(name, value)
                self.slots.append(name)
            self.scalars.append(value if isinstance(value, float) else None)

    def forward(self, *inputs: Tensor) -> Tensor:
        given = iter(inputs)
        operands: list[Tensor | float] = []
        for slot, scalar in zip(self.slots, self.scalars, strict=True):
            if slot == "input":
                operands.append(next(given))
            elif scalar is not None:
                operands.append(scalar)
            else:
                operands.append(getattr(self, slot))
        return self.op(operands[0], operands[1])


class Clip(nn.Module):
    def __init__(self, low: float | None, high: float | None) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, self.low, self.high)


class Relu(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class LeakyRelu(nn.Module):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.alpha)


class Transpose(nn.Module):
    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        self.perm = tuple(perm)

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(self.perm)


class Reshape(nn.Module):
    """ONNX Reshape with a constant shape: 0 copies the input's dimension, -1 is inferred."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)]
        return x.reshape(shape)


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.cat(inputs, dim=self.axis)


class Softmax(nn.Module):
    """Softmax, computed in float32 whatever the module's precision (the scores stay exact)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(x.float(), dim=self.axis)


class Gather(nn.Module):
    """ONNX Gather with constant indices (a scalar index drops the axis)."""

    def __init__(self, indices: np.ndarray[Any, Any], axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.scalar = int(indices) if indices.ndim == 0 else None
        self.register_buffer(
            "indices", torch.from_numpy(np.array(indices, dtype=np.int64).reshape(-1))
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.scalar is not None:
            return x.select(self.axis, self.scalar)
        return x.index_select(self.axis, self.get_buffer("indices"))


class ResizeNearest(nn.Module):
    """ONNX Resize, nearest neighbour, asymmetric coordinates, floor rounding (as
    TensorFlow's ResizeNearestNeighbor), by constant scales or sizes."""

    def __init__(self, scales: Sequence[float] | None, sizes: Sequence[int] | None) -> None:
        super().__init__()
        self.scales = None if scales is None else (float(scales[2]), float(scales[3]))
        self.sizes = None if sizes is None else (int(sizes[2]), int(sizes[3]))

    def forward(self, x: Tensor) -> Tensor:
        if self.sizes is not None:
            return F.interpolate(x, size=self.sizes, mode="nearest")
        return F.interpolate(x, scale_factor=self.scales, mode="nearest")


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass(frozen=True)
class Wire:
    """Which values a step reads and writes, and which values are no longer needed after it."""

    inputs: tuple[str, ...]
    output: str
    release: tuple[str, ...]


class OnnxModule(nn.Module):
    """The graph as a module: `forward(x)` returns the graph's outputs in order. Intermediate
    values are dropped as soon as the last step reading them has run."""

    def __init__(
        self,
        steps: Sequence[nn.Module],
        wires: Sequence[Wire],
        input_name: str,
        output_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.wires = tuple(wires)
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.op_types = tuple(type(s).__name__ for s in steps)

    def set_memory_format(self, memory_format: torch.memory_format) -> OnnxModule:
        """The layout convolutions run in (channels_last or contiguous NCHW)."""
        for step in self.steps:
            if isinstance(step, Conv):
                step.memory_format = memory_format
        module: Any = self  # Module.to's stubs omit memory_format
        module.to(memory_format=memory_format)
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        values: dict[str, Tensor] = {self.input_name: x}
        for step, wire in zip(self.steps, self.wires, strict=True):
            values[wire.output] = step(*[values[name] for name in wire.inputs])
            for name in wire.release:
                del values[name]
        return tuple(values[name] for name in self.output_names)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _constant(array: np.ndarray[Any, Any]) -> Constant:
    """A float constant as a Python float when it holds one value, else as a tensor."""
    if array.size == 1:
        return float(array.reshape(-1)[0])
    return torch.from_numpy(np.array(array, dtype=np.float32))


class _Translator:
    """Turns the nodes of one graph into steps, resolving constant inputs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants: dict[str, np.ndarray[Any, Any]] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }

    def constant(self, node: onnx.NodeProto, index: int) -> np.ndarray[Any, Any] | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise GraphError(f"{node.op_type} {node.name!r}: input {name!r} must be a constant")
        return self.constants[name]

    def step(self, node: onnx.NodeProto) -> nn.Module:
        build = getattr(self, f"_{node.op_type.lower()}", None)
        if build is None:
            raise GraphError(f"unsupported ONNX op {node.op_type} (node {node.name!r})")
        step: nn.Module = build(node, _attributes(node))
        return step

    def _conv(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        weight, bias = self.constant(node, 1), self.constant(node, 2)
        if weight is None or weight.ndim != 4 or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            raise GraphError(f"Conv {node.name!r}: only 2-D convolutions with explicit pads")
        return Conv(
            torch.from_numpy(np.array(weight, dtype=np.float32)),
            None if bias is None else torch.from_numpy(np.array(bias, dtype=np.float32)),
            attrs,
        )

    def _binary(self, node: onnx.NodeProto) -> nn.Module:
        constants = [
            _constant(self.constants[name]) if name in self.constants else None
            for name in node.input
        ]
        return Elementwise(node.op_type, constants)

    def _add(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return self._binary(node)

    _sub = _mul = _div = _add

    def _clip(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        low, high = self.constant(node, 1), self.constant(node, 2)
        return Clip(
            attrs.get("min") if low is None else float(low),
            attrs.get("max") if high is None else float(high),
        )

    def _relu(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Relu()

    def _leakyrelu(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return LeakyRelu(float(attrs.get("alpha", 0.01)))

    def _transpose(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Transpose(attrs["perm"])

    def _reshape(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        shape = self.constant(node, 1)
        if shape is None or attrs.get("allowzero", 0):
            raise GraphError(f"Reshape {node.name!r}: needs a constant shape, allowzero=0")
        return Reshape([int(d) for d in shape])

    def _concat(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Concat(int(attrs["axis"]))

    def _softmax(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Softmax(int(attrs.get("axis", -1)))

    def _gather(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        indices = self.constant(node, 1)
        if indices is None:
            raise GraphError(f"Gather {node.name!r}: needs constant indices")
        return Gather(indices, int(attrs.get("axis", 0)))

    def _identity(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Identity()

    def _resize(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        expected = {
            "mode": b"nearest",
            "coordinate_transformation_mode": b"asymmetric",
            "nearest_mode": b"floor",
        }
        for name, value in expected.items():
            if attrs.get(name, value) != value:
                raise GraphError(f"Resize {node.name!r}: only {expected}, got {attrs}")
        scales, sizes = self.constant(node, 2), self.constant(node, 3)
        if (scales is None or scales.size == 0) and sizes is None:
            raise GraphError(f"Resize {node.name!r}: needs constant scales or sizes")
        if sizes is not None:
            return ResizeNearest(None, [int(v) for v in sizes])
        return ResizeNearest([float(v) for v in scales] if scales is not None else None, None)


def op_types(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph holds."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _wires(nodes: Sequence[onnx.NodeProto], constants: set[str], outputs: set[str]) -> list[Wire]:
    last_use: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name and name not in constants:
                last_use[name] = index
    wires = []
    for index, node in enumerate(nodes):
        inputs = tuple(n for n in node.input if n and n not in constants)
        release = tuple(sorted({n for n in inputs if last_use[n] == index and n not in outputs}))
        wires.append(Wire(inputs, node.output[0], release))
    return wires


def translate(model: onnx.ModelProto) -> OnnxModule:
    """The graph of `model` as an OnnxModule (float32, on the CPU, in evaluation mode)."""
    graph = model.graph
    translator = _Translator(graph)
    for node in graph.node:
        if node.op_type == "Constant":
            translator.constants[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"])
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    for node in nodes:
        if len(node.output) != 1:
            raise GraphError(f"{node.op_type} {node.name!r}: one output expected")
    inputs = [i.name for i in graph.input if i.name not in translator.constants]
    if len(inputs) != 1:
        raise GraphError(f"one graph input expected, found {inputs}")
    outputs = [o.name for o in graph.output]
    steps = [translator.step(node) for node in nodes]
    wires = _wires(nodes, set(translator.constants), set(outputs))
    module = OnnxModule(steps, wires, inputs[0], outputs)
    return module.eval()


def load_module(model_path: Path) -> OnnxModule:
    """The converted model file as an OnnxModule."""
    return translate(onnx.load(str(model_path)))


# --- decoding and NMS on the device -----------------------------------------------------------


def decode_boxes(deltas: Tensor, priors: Tensor) -> Tensor:
    """focal.retinaface.decode_boxes on tensors: (dx, dy, dw, dh) -> x1, y1, x2, y2."""
    centres = priors[:, :2] + deltas[:, :2] * retinaface.VARIANCES[0] * priors[:, 2:]
    sides = priors[:, 2:] * torch.exp(deltas[:, 2:] * retinaface.VARIANCES[1])
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=1)


def decode_landmarks(deltas: Tensor, priors: Tensor) -> Tensor:
    """focal.retinaface.decode_landmarks on tensors: [n, 10] -> [n, 5, 2]."""
    points = deltas.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * retinaface.VARIANCES[0] * priors[:, None, 2:]


def pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU of every box with every box (x1, y1, x2, y2), as focal.retinaface.iou computes it."""
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas[:, None] + areas[None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS as focal.retinaface.nms (indices kept, best score first; a box goes when its
    IoU with a kept box is above the threshold), without a loop over boxes: `keep[i]` is true
    when no kept box before i overlaps it. Iterating that rule from "all kept" fixes one more
    leading entry per round, and its only fixed point is the greedy answer."""
    order = torch.argsort(scores, descending=True, stable=True)
    over = torch.triu(pairwise_iou(boxes[order]) > iou_threshold, diagonal=1)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    while True:
        updated = ~(over & keep[:, None]).any(dim=0)
        if torch.equal(updated, keep):
            return order[keep]
        keep = updated


def batched_nms_torch(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float
) -> Tensor:
    """NMS within each group (batch item); indices kept, best score first."""
    kept = []
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).flatten()
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    joined = torch.cat(kept)
    return joined[torch.argsort(scores[joined], descending=True, stable=True)]


_NMS_CHOICE: list[Nms] = []


def _torchvision_nms() -> Nms | None:
    """torchvision.ops.batched_nms when torchvision imports and runs cleanly beside this torch."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.ops import batched_nms

            probe = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]])
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            for device in devices:
                scores, groups = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
                kept = batched_nms(probe.to(device), scores.to(device), groups.to(device), 0.5)
                if kept.tolist() != [0]:
                    return None
    except Exception:
        return None
    chosen: Nms = batched_nms
    return chosen


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's batched NMS where it works, else batched_nms_torch (the same answer)."""
    if not _NMS_CHOICE:
        _NMS_CHOICE.append(_torchvision_nms() or batched_nms_torch)
    return _NMS_CHOICE[0](boxes, scores, groups, iou_threshold)


def nms_backend() -> str:
    batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    return "torch" if _NMS_CHOICE[0] is batched_nms_torch else "torchvision"


@dataclass(frozen=True)
class Found:
    """The faces kept in a batch, on the CPU: batch item, box, landmarks, score per row, rows of
    one item together, best score first."""

    items: np.ndarray[Any, np.dtype[np.int64]]
    boxes: np.ndarray[Any, np.dtype[np.float32]]  # [n, 4]
    landmarks: np.ndarray[Any, np.dtype[np.float32]]  # [n, 5, 2]
    scores: np.ndarray[Any, np.dtype[np.float32]]  # [n]

    def detections(self, item: int) -> retinaface.Detections:
        rows = self.items == item
        return retinaface.Detections(
            boxes=self.boxes[rows], landmarks=self.landmarks[rows], scores=self.scores[rows]
        )


def decode_batch(
    outputs: Sequence[Tensor], priors: Tensor, settings: retinaface.Settings, count: int
) -> Found:
    """Threshold, decode and suppress the first `count` items of a batch's raw outputs on the
    device, then bring the kept rows to the CPU in one transfer."""
    deltas, marks, scores = (o[:count].float() for o in outputs)
    items, anchors = torch.nonzero(scores > settings.score_threshold, as_tuple=True)
    chosen = priors[anchors]
    boxes = decode_boxes(deltas[items, anchors], chosen)
    points = decode_landmarks(marks[items, anchors], chosen).reshape(-1, 10)
    picked = scores[items, anchors]
    keep = batched_nms(boxes, picked, items, settings.nms_iou)
    keep = keep[torch.argsort(items[keep], stable=True)]
    rows = torch.cat(
        [items[keep, None].float(), boxes[keep], points[keep], picked[keep, None]], dim=1
    )
    table = rows.cpu().numpy()
    return Found(
        items=table[:, 0].astype(np.int64),
        boxes=np.ascontiguousarray(table[:, 1:5]),
        landmarks=np.ascontiguousarray(table[:, 5:15]).reshape(-1, 5, 2),
        scores=np.ascontiguousarray(table[:, 15]),
    )


# --- batching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Images (by their index in the request) that share one padded inference size."""

    height: int
    width: int
    indices: tuple[int, ...]


def inference_shape(image: RGBImage) -> tuple[int, int]:
    """(height, width) detection runs at for this image (SPEC section 2, step 1)."""
    width, height = retinaface.inference_size(int(image.shape[1]), int(image.shape[0]))
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
    def model_id(self) -> str:
        """As focal.retinaface.RetinaFace's: fp32 gives the same faces as the CPU runtimes."""
        s = self.settings
        tag = "" if self.precision == "fp32" else f":torch-{self.precision}"
        return f"retinaface-mnv2:{self._model_sha256[:16]}:s{s.score_threshold}:n{s.nms_iou}{tag}"

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
        shapes = [inference_shape(image) for image in images]
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


# --- comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How one image's faces from two detectors compare: faces paired by IoU (best first)."""

    reference: int
    candidate: int
    paired: int
    min_iou: float  # over paired faces (1.0 when none)
    max_score_difference: float  # over paired faces (0.0 when none)
    unpaired_scores: tuple[float, ...]  # scores of faces found by one detector only


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: Sequence[Face], candidate: Sequence[Face], min_iou: float) -> Agreement:
    """Pairs each reference face (best score first) with the unpaired candidate face of highest
    IoU, when that IoU is at least min_iou."""
    free = list(range(len(candidate)))
    ious: list[float] = []
    diffs: list[float] = []
    unpaired: list[float] = []
    for face in sorted(reference, key=lambda f: -f.score):
        scored = [(box_iou(face.box, candidate[j].box), j) for j in free]
        best = max(scored, default=(0.0, -1))
        if best[0] < min_iou:
            unpaired.append(face.score)
            continue
        free.remove(best[1])
        ious.append(best[0])
        diffs.append(abs(face.score - candidate[best[1]].score))
    unpaired.extend(candidate[j].score for j in free)
    return Agreement(
        reference=len(reference),
        candidate=len(candidate),
        paired=len(ious),
        min_iou=min(ious, default=1.0),
        max_score_difference=max(diffs, default=0.0),
        unpaired_scores=tuple(unpaired),
    )


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
    settings = retinaface.Settings(score_threshold=score_threshold, nms_iou=nms_iou)
    return TorchDetector(path, sha, settings, options)
