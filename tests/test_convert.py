"""The GraphDef reader and the GraphDef -> ONNX translator, on small hand-built graphs.

The graphs are serialised here with a few lines of protobuf encoding, and the converted ONNX
model is checked against a numpy implementation of TensorFlow's semantics (asymmetric 'SAME'
padding, inference batch norm, half-pixel nearest upsampling). The real model's equivalence
with its original graph is in tests/test_retinaface.py.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from focal import errors
from focal.face import convert, graphdef

Array = npt.NDArray[Any]

# --- protobuf encoding (the inverse of focal.face.graphdef, for the messages used here) ----------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def shape(dims: tuple[int, ...]) -> bytes:
    return b"".join(field(2, int_field(1, d)) for d in dims)


DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.int32): 3, np.dtype(np.int64): 9}


def tensor(value: Array) -> bytes:
    return (
        int_field(1, DTYPE_CODES[value.dtype])
        + field(2, shape(value.shape))
        + field(4, value.tobytes())
    )


def attr(value: object) -> bytes:
    if isinstance(value, bool):
        return int_field(5, int(value))
    if isinstance(value, str):
        return field(2, value.encode())
    if isinstance(value, float):
        return varint(4 << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, int):
        return int_field(3, value)
    if isinstance(value, list):
        return field(1, field(3, b"".join(varint(v) for v in value)))
    if isinstance(value, np.ndarray):
        return field(8, tensor(value))
    raise TypeError(value)


def node(name: str, op: str, inputs: list[str], **attrs: object) -> bytes:
    body = field(1, name.encode()) + field(2, op.encode())
    body += b"".join(field(3, i.encode()) for i in inputs)
    for key, value in attrs.items():
        body += field(5, field(1, key.encode()) + field(2, attr(value)))
    return field(1, body)


def const(name: str, value: Array) -> bytes:
    return node(name, "Const", [], value=value, dtype=DTYPE_CODES[value.dtype])


# --- the reader ---------------------------------------------------------------------------


def test_reader_decodes_names_inputs_and_every_attr_kind() -> None:
    kernel = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    data = node(
        "net/conv",
        "Conv2D",
        ["net/input", "net/kernel", "^net/control"],
        strides=[1, 2, 2, 1],
        padding="SAME",
        epsilon=0.25,
        is_training=False,
        T=1,
        value=kernel,
    )
    (parsed,) = graphdef.parse_graph(data)
    assert parsed.name == "net/conv"
    assert parsed.op == "Conv2D"
    assert parsed.inputs == ("net/input", "net/kernel", "^net/control")
    assert parsed.attrs["strides"] == [1, 2, 2, 1]
    assert parsed.attrs["padding"] == "SAME"
    assert parsed.attrs["epsilon"] == 0.25
    assert parsed.attrs["is_training"] is False
    assert parsed.attrs["T"] == 1
    np.testing.assert_array_equal(parsed.attrs["value"], kernel)


def test_reader_reads_negative_ints_and_shapes() -> None:
    value = np.array([-1, 7, -3], dtype=np.int64)
    (parsed,) = graphdef.parse_graph(node("shape", "Const", [], value=value, N=-5))
    np.testing.assert_array_equal(parsed.attrs["value"], value)
    assert parsed.attrs["N"] == -5


def test_tensor_with_one_float_value_fills_its_shape() -> None:
    # TensorProto(dtype=float, shape=[2, 3], float_val=[1.5]): a constant-filled tensor.
    data = int_field(1, 1) + field(2, shape((2, 3))) + field(5, struct.pack("<f", 1.5))
    np.testing.assert_array_equal(graphdef.parse_tensor(data), np.full((2, 3), 1.5))


def test_reader_rejects_truncated_bytes() -> None:
    data = node("a", "Const", [], value=np.zeros(4, dtype=np.float32))
    with pytest.raises(errors.GraphDefError, match="truncated"):
        graphdef.parse_graph(data[:-3])


@pytest.mark.parametrize(
    ("kernel", "stride", "pads"),
    [
        ((3, 3), (1, 1), [1, 1, 1, 1]),
        ((1, 1), (1, 1), [0, 0, 0, 0]),
        ((3, 3), (2, 2), [0, 0, 1, 1]),  # TF puts the odd pixel after: bottom/right
        ((5, 5), (2, 2), [1, 1, 2, 2]),
        ((2, 2), (1, 1), [0, 0, 1, 1]),
    ],
)
def test_same_padding_matches_tensorflow(
    kernel: tuple[int, int], stride: tuple[int, int], pads: list[int]
) -> None:
    assert convert._same_pads(kernel, stride) == pads


# --- numpy reference of the TF ops --------------------------------------------------------


def tf_conv(x: Array, w: Array, stride: int, pads: tuple[int, int, int, int]) -> Array:
    """NHWC conv2d; w [kh, kw, in, out]; pads (top, left, bottom, right) of zeros."""
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, w.shape[3]))
    for i in range(rows):
        for j in range(cols):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def tf_depthwise(x: Array, w: Array, stride: int, pads: tuple[int, int, int, int]) -> Array:
    channels = [
        tf_conv(x[..., c : c + 1], w[:, :, c : c + 1, :], stride, pads) for c in range(x.shape[3])
    ]
    return np.concatenate(channels, axis=3)


def batch_norm(x: Array, bn: tuple[Array, Array, Array, Array], eps: float) -> Array:
    scale, offset, mean, var = bn
    return (x - mean) / np.sqrt(var + eps) * scale + offset


def bn_params(rng: np.random.Generator, channels: int) -> tuple[Array, Array, Array, Array]:
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    offset = rng.normal(0, 0.5, channels).astype(np.float32)
    mean = rng.normal(0, 0.5, channels).astype(np.float32)
    var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    return scale, offset, mean, var


def bn_nodes(prefix: str, params: tuple[Array, Array, Array, Array], source: str) -> bytes:
    names = [f"{prefix}/{part}" for part in ("scale", "offset", "mean", "var")]
    consts = b"".join(const(n, p) for n, p in zip(names, params, strict=True))
    return consts + node(prefix, "FusedBatchNormV3", [source, *names], epsilon=0.001)


def test_translated_network_matches_tensorflow_semantics() -> None:
    """x -> /127.5 - 1 -> Pad(0,1) -> Conv 3x3 s2 VALID + BN -> Relu6 -> depthwise 3x3 s2 SAME
    + BN -> LeakyRelu -> nearest 2x up -> concat with the Relu6 output -> 1x1 conv + bias ->
    reshape to [N, H*W*2, 3]."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (3, 3, 4, 1)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (1, 1, 8, 6)).astype(np.float32)
    b3 = rng.normal(0, 0.3, 6).astype(np.float32)
    bn1, bn2 = bn_params(rng, 4), bn_params(rng, 4)
    graph = b"".join(
        [
            node("x", "Placeholder", [], dtype=1),
            const("d", np.array(127.5, dtype=np.float32)),
            node("div", "RealDiv", ["x", "d"]),
            const("one", np.array(1.0, dtype=np.float32)),
            node("sub", "Sub", ["div", "one"]),
            const("pads", np.array([[0, 0], [0, 1], [0, 1], [0, 0]], dtype=np.int32)),
            node("pad", "Pad", ["sub", "pads"]),
            const("w1", w1),
            node("w1/read", "Identity", ["w1"]),
            node("c1", "Conv2D", ["pad", "w1/read"], strides=[1, 2, 2, 1], padding="VALID"),
            bn_nodes("bn1", bn1, "c1"),
            node("r1", "Relu6", ["bn1"]),
            const("w2", w2),
            node("c2", "DepthwiseConv2dNative", ["r1", "w2"], strides=[1, 2, 2, 1], padding="SAME"),
            bn_nodes("bn2", bn2, "c2"),
            node("r2", "LeakyRelu", ["bn2"], alpha=0.1),
            const("size", np.array([4, 4], dtype=np.int32)),
            node(
                "up",
                "ResizeNearestNeighbor",
                ["r2", "size"],
                align_corners=False,
                half_pixel_centers=True,
            ),
            const("axis", np.array(3, dtype=np.int32)),
            node("cat", "ConcatV2", ["r1", "up", "axis"]),
            const("w3", w3),
            node("c3", "Conv2D", ["cat", "w3"], strides=[1, 1, 1, 1], padding="VALID"),
            const("b3", b3),
            node("bias", "BiasAdd", ["c3", "b3"]),
            const("s0", np.array(-1, dtype=np.int32)),
            const("s1", np.array(32, dtype=np.int32)),
            const("s2", np.array(3, dtype=np.int32)),
            node("shape", "Pack", ["s0", "s1", "s2"]),
            node("out", "Reshape", ["bias", "shape"]),
        ]
    )
    model = convert.convert_nodes(graphdef.parse_graph(graph), {"out": "out"})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    (got,) = session.run(None, {"x": x})

    h = x.astype(np.float64) / 127.5 - 1
    r1 = np.clip(batch_norm(tf_conv(h, w1, 2, (0, 0, 1, 1)), bn1, 0.001), 0, 6)
    z = batch_norm(tf_depthwise(r1, w2, 2, (0, 0, 1, 1)), bn2, 0.001)
    r2 = np.where(z > 0, z, 0.1 * z)
    rows = np.floor((np.arange(4) + 0.5) * 0.5).astype(int)  # half-pixel nearest, 2x
    up = r2[:, rows][:, :, rows]
    out = tf_conv(np.concatenate([r1, up], axis=3), w3, 1, (0, 0, 0, 0)) + b3
    expected = out.reshape(2, -1, 3)
    assert got.shape == (2, 32, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_unknown_op_is_named_in_the_error() -> None:
    graph = node("x", "Placeholder", []) + node("odd", "Cumsum", ["x"])
    with pytest.raises(errors.ConversionError, match="odd: op Cumsum"):
        convert.convert_nodes(graphdef.parse_graph(graph), {"y": "odd"})
