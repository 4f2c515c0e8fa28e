"""Translate the RetinaFace frozen TensorFlow graph into an ONNX model, without TensorFlow.

The translation walks back from the three head outputs (box deltas, landmark deltas, class
softmax) and emits only the network: the graph's own input normalisation, convolutions with
their batch normalisation folded into weights and bias, depthwise convolutions, Relu6, LeakyRelu,
Relu, residual adds, the FPN's nearest-neighbour upsampling, the SSH concatenations and the
heads. The in-graph anchor decoding and NMS are left out; :mod:`focal.face.retinaface` does them.

ONNX model contract::

    input   x          float32 [batch, height, width, 3]  RGB 0..255, sides multiples of 32
    output  boxes      float32 [batch, anchors, 4]        box deltas (dx, dy, dw, dh)
    output  landmarks  float32 [batch, anchors, 10]       landmark deltas (x, y) x 5
    output  scores     float32 [batch, anchors]           face probability

Anchors run over the levels of stride 8, 16, 32; in each, row by row, two anchors per cell.
TensorFlow's 'SAME' padding is computed for inputs divisible by the stride, which the
multiple-of-32 contract guarantees at every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from focal.errors import ConversionError
from focal.face import CONVERTER_VERSION
from focal.face.graphdef import Node, parse_graph

OPSET = 17
HEAD_OUTPUTS = {
    "boxes": "RetinaFaceModel/tf_op_layer_concat/concat",
    "landmarks": "RetinaFaceModel/tf_op_layer_concat_1/concat_1",
    "classes": "RetinaFaceModel/softmax/Softmax",
}
PASS_THROUGH = {"Identity"}
CONV_OPS = {"Conv2D", "DepthwiseConv2dNative"}
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]
NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}  # where each NHWC axis lives in NCHW

Array = npt.NDArray[Any]


@dataclass
class _Builder:
    """Accumulates ONNX nodes and initialisers while the TF graph is walked."""

    graph: dict[str, Node]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    weights: list[onnx.TensorProto] = field(default_factory=list)
    done: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint.rsplit('/', 1)[-1]}_{self.counter}"

    def const(self, hint: str, value: Array) -> str:
        name = self.fresh(hint)
        self.weights.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def emit(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def node(self, ref: str) -> Node:
        name = ref.lstrip("^").split(":")[0]
        if name not in self.graph:
            raise ConversionError(f"missing node {name}")
        return self.graph[name]

    def source(self, ref: str) -> Node:
        """The node behind a reference, looking through Identity nodes."""
        node = self.node(ref)
        while node.op in PASS_THROUGH:
            node = self.node(node.inputs[0])
        return node

    def value(self, ref: str) -> Array:
        node = self.source(ref)
        if node.op != "Const":
            raise ConversionError(f"{node.name} ({node.op}) is not a constant")
        value: Array = node.attrs["value"]
        return value


def _same_pads(kernel: tuple[int, int], strides: tuple[int, int]) -> list[int]:
    """TF 'SAME' for inputs divisible by the stride: the odd pixel goes after (bottom/right)."""
    total = [max(k - s, 0) for k, s in zip(kernel, strides, strict=True)]
    begin = [t // 2 for t in total]
    return [begin[0], begin[1], total[0] - begin[0], total[1] - begin[1]]


def _fold_batch_norm(b: _Builder, bn: Node, weight: Array, bias: Array) -> tuple[Array, Array]:
    """Folds FusedBatchNorm (inference) into per-output-channel conv weight [O, ...] and bias."""
    scale, offset, mean, var = (b.value(ref).astype(np.float64) for ref in bn.inputs[1:5])
    factor = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-3)))
    shape = (-1,) + (1,) * (weight.ndim - 1)
    folded = weight.astype(np.float64) * factor.reshape(shape)
    return folded.astype(np.float32), ((bias - mean) * factor + offset).astype(np.float32)


def _conv_weight(conv: Node, kernel: Array) -> tuple[Array, int]:
    """TF kernel -> ONNX [out, in/group, kh, kw] and the group count."""
    if conv.op == "DepthwiseConv2dNative":
        kh, kw, channels, multiplier = kernel.shape
        weight = kernel.reshape(kh, kw, channels * multiplier, 1).transpose(2, 3, 0, 1)
        return weight, int(channels)
    return kernel.transpose(3, 2, 0, 1), 1


def _check_nhwc(node: Node) -> None:
    if node.attrs.get("data_format", "NHWC") != "NHWC":
        raise ConversionError(f"{node.name}: only NHWC is handled")


def _conv(b: _Builder, conv: Node, bn: Node | None) -> str:
    """Conv2D / DepthwiseConv2dNative (+ folded batch norm), absorbing an explicit zero Pad."""
    _check_nhwc(conv)
    weight, group = _conv_weight(conv, b.value(conv.inputs[1]))
    bias = np.zeros(weight.shape[0], dtype=np.float32)
    if bn is not None:
        weight, bias = _fold_batch_norm(b, bn, weight, bias)
    strides = tuple(conv.attrs["strides"][1:3])
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    pads = _same_pads(kernel, strides) if conv.attrs["padding"] == "SAME" else [0, 0, 0, 0]
    data = b.source(conv.inputs[0])
    if data.op == "Pad":
        padding = b.value(data.inputs[1])
        top, left, bottom, right = padding[1][0], padding[2][0], padding[1][1], padding[2][1]
        pads = [pads[0] + top, pads[1] + left, pads[2] + bottom, pads[3] + right]
        data = b.source(data.inputs[0])
    inputs = [translate(b, data.name), b.const(conv.name + "_w", weight)]
    inputs.append(b.const(conv.name + "_b", bias))
    return b.emit(
        "Conv",
        inputs,
        conv.name,
        kernel_shape=list(kernel),
        strides=list(strides),
        pads=[int(p) for p in pads],
        dilations=list(conv.attrs.get("dilations", [1, 1, 1, 1])[1:3]),
        group=group,
    )


def _bias_add(b: _Builder, node: Node) -> str:
    conv = b.source(node.inputs[0])
    if conv.op not in CONV_OPS:
        raise ConversionError(f"{node.name}: BiasAdd after {conv.op}")
    out = _conv(b, conv, None)
    bias = b.value(node.inputs[1]).astype(np.float32).reshape(1, -1, 1, 1)
    return b.emit("Add", [out, b.const(node.name, bias)], node.name)


def _head_reshape(b: _Builder, node: Node) -> str:
    """[N, H, W, A*k] -> [N, H*W*A, k]: back to NHWC order, then flatten."""
    pack = b.source(node.inputs[1])
    width = int(b.value(pack.inputs[-1]))
    nhwc = b.emit("Transpose", [translate(b, node.inputs[0])], node.name, perm=NCHW_TO_NHWC)
    shape = b.const(node.name + "_shape", np.array([0, -1, width], dtype=np.int64))
    return b.emit("Reshape", [nhwc, shape], node.name)


def _concat(b: _Builder, node: Node) -> str:
    axis = int(b.value(node.inputs[-1]))
    inputs = [translate(b, ref) for ref in node.inputs[:-1] if not ref.startswith("^")]
    first = b.source(node.inputs[0])
    four_d = first.op not in {"Reshape"}
    return b.emit("Concat", inputs, node.name, axis=NCHW_AXIS[axis] if four_d else axis)


def _resize(b: _Builder, node: Node) -> str:
    """ResizeNearestNeighbor to the lateral feature's size: exactly 2x under the model contract."""
    if node.attrs.get("align_corners"):
        raise ConversionError(f"{node.name}: align_corners is not handled")
    scales = b.const(node.name + "_scales", np.array([1, 1, 2, 2], dtype=np.float32))
    return b.emit(
        "Resize",
        [translate(b, node.inputs[0]), "", scales],
        node.name,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


def _scalar_op(b: _Builder, node: Node, op: str) -> str:
    value = b.value(node.inputs[1]).astype(np.float32)
    return b.emit(op, [translate(b, node.inputs[0]), b.const(node.name, value)], node.name)


def _activation(b: _Builder, node: Node) -> str:
    data = translate(b, node.inputs[0])
    if node.op == "Relu":
        return b.emit("Relu", [data], node.name)
    if node.op == "LeakyRelu":
        return b.emit("LeakyRelu", [data], node.name, alpha=float(node.attrs["alpha"]))
    low = b.const(node.name + "_lo", np.array(0.0, dtype=np.float32))
    high = b.const(node.name + "_hi", np.array(6.0, dtype=np.float32))
    return b.emit("Clip", [data, low, high], node.name)


def _input(b: _Builder, node: Node) -> str:
    return b.emit("Transpose", ["x"], node.name, perm=NHWC_TO_NCHW)


def _translate_node(b: _Builder, node: Node) -> str:
    op = node.op
    if op in PASS_THROUGH:
        return translate(b, node.inputs[0])
    if op == "Placeholder":
        return _input(b, node)
    if op == "FusedBatchNormV3":
        return _conv(b, b.source(node.inputs[0]), node)
    if op in CONV_OPS:
        return _conv(b, node, None)
    if op == "BiasAdd":
        return _bias_add(b, node)
    if op in {"Relu", "Relu6", "LeakyRelu"}:
        return _activation(b, node)
    if op == "AddV2":
        inputs = [translate(b, ref) for ref in node.inputs[:2]]
        return b.emit("Add", inputs, node.name)
    if op == "RealDiv":
        return _scalar_op(b, node, "Div")
    if op == "Sub":
        return _scalar_op(b, node, "Sub")
    if op == "ConcatV2":
        return _concat(b, node)
    if op == "ResizeNearestNeighbor":
        return _resize(b, node)
    if op == "Reshape":
        return _head_reshape(b, node)
    if op == "Softmax":
        return b.emit("Softmax", [translate(b, node.inputs[0])], node.name, axis=-1)
    raise ConversionError(f"{node.name}: op {op} is not handled")


def translate(b: _Builder, ref: str) -> str:
    """The ONNX tensor for a TF node (rank-4 tensors are NCHW), translating it once."""
    node = b.node(ref)
    if node.name not in b.done:
        b.done[node.name] = _translate_node(b, node)
    return b.done[node.name]


def _heads(b: _Builder) -> list[onnx.ValueInfoProto]:
    """The model's three outputs from the graph's head tensors."""
    b.nodes.append(helper.make_node("Identity", [translate(b, HEAD_OUTPUTS["boxes"])], ["boxes"]))
    b.nodes.append(
        helper.make_node("Identity", [translate(b, HEAD_OUTPUTS["landmarks"])], ["landmarks"])
    )
    face = b.const("face_class", np.array(1, dtype=np.int64))
    classes = translate(b, HEAD_OUTPUTS["classes"])
    b.nodes.append(helper.make_node("Gather", [classes, face], ["scores"], axis=2))
    return [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
        helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["batch", "anchors", 10]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "anchors"]),
    ]


def _flat_outputs(b: _Builder, outputs: dict[str, str]) -> list[onnx.ValueInfoProto]:
    """Named outputs for TF tensors of rank 3 (such as the head reshapes), as they are."""
    infos = []
    for name, ref in outputs.items():
        b.nodes.append(helper.make_node("Identity", [translate(b, ref)], [name]))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", None, None]))
    return infos


def convert_nodes(nodes: list[Node], outputs: dict[str, str] | None = None) -> onnx.ModelProto:
    """The ONNX model for parsed graph nodes: the RetinaFace heads (see the module docstring)
    or, given outputs (ONNX name -> TF node of rank 3), those tensors."""
    builder = _Builder(graph={node.name: node for node in nodes})
    infos = _heads(builder) if outputs is None else _flat_outputs(builder, outputs)
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "height", "width", 3])
    graph = helper.make_graph(
        builder.nodes, "retinaface_mobilenetv2", [image], infos, builder.weights
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="focal.convert",
        producer_version=CONVERTER_VERSION,
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def convert_graph(data: bytes) -> onnx.ModelProto:
    """The ONNX model (see the module docstring) for a serialised RetinaFace frozen graph."""
    return convert_nodes(parse_graph(data))


def convert_bytes(data: bytes) -> bytes:
    """Serialised ONNX model for a serialised frozen graph (deterministic for the same input)."""
    serialised: bytes = convert_graph(data).SerializeToString(deterministic=True)
    return serialised
