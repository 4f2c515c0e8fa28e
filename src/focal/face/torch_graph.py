"""The converted ONNX graph translated node by node into a torch.nn.Module.

    translate(model)     an onnx.ModelProto -> OnnxModule (float32, CPU, evaluation mode)
    load_module(path)    the same from a model file

The model file is the one source of truth: no network is written out by hand. Only the ops the
converted RetinaFace graph holds are translated; anything else is an OnnxGraphError. This module
imports torch; only focal.face.torch_detector imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor, nn

from focal.errors import OnnxGraphError

Constant = Tensor | float


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
            raise OnnxGraphError(f"{node.op_type} {node.name!r}: input {name!r} must be a constant")
        return self.constants[name]

    def step(self, node: onnx.NodeProto) -> nn.Module:
        build = getattr(self, f"_{node.op_type.lower()}", None)
        if build is None:
            raise OnnxGraphError(f"unsupported ONNX op {node.op_type} (node {node.name!r})")
        step: nn.Module = build(node, _attributes(node))
        return step

    def _conv(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        weight, bias = self.constant(node, 1), self.constant(node, 2)
        if weight is None or weight.ndim != 4 or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            raise OnnxGraphError(f"Conv {node.name!r}: only 2-D convolutions with explicit pads")
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
            raise OnnxGraphError(f"Reshape {node.name!r}: needs a constant shape, allowzero=0")
        return Reshape([int(d) for d in shape])

    def _concat(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Concat(int(attrs["axis"]))

    def _softmax(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        return Softmax(int(attrs.get("axis", -1)))

    def _gather(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> nn.Module:
        indices = self.constant(node, 1)
        if indices is None:
            raise OnnxGraphError(f"Gather {node.name!r}: needs constant indices")
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
                raise OnnxGraphError(f"Resize {node.name!r}: only {expected}, got {attrs}")
        scales, sizes = self.constant(node, 2), self.constant(node, 3)
        if (scales is None or scales.size == 0) and sizes is None:
            raise OnnxGraphError(f"Resize {node.name!r}: needs constant scales or sizes")
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
            raise OnnxGraphError(f"{node.op_type} {node.name!r}: one output expected")
    inputs = [i.name for i in graph.input if i.name not in translator.constants]
    if len(inputs) != 1:
        raise OnnxGraphError(f"one graph input expected, found {inputs}")
    outputs = [o.name for o in graph.output]
    steps = [translator.step(node) for node in nodes]
    wires = _wires(nodes, set(translator.constants), set(outputs))
    module = OnnxModule(steps, wires, inputs[0], outputs)
    return module.eval()


def load_module(model_path: Path) -> OnnxModule:
    """The converted model file as an OnnxModule."""
    return translate(onnx.load(str(model_path)))
