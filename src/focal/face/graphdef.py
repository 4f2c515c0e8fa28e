"""A minimal reader for TensorFlow frozen graphs (``GraphDef`` protobuf), without TensorFlow.

Only the wire format and the few messages a frozen inference graph uses are decoded:
``GraphDef.node`` -> :class:`Node` (name, op, inputs, attributes), ``AttrValue`` (string, int,
float, bool, type, shape, tensor, lists of these) and ``TensorProto`` (as a numpy array).
Field numbers follow tensorflow/core/framework/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from focal.errors import GraphDefError

# DataType enum values (types.proto) -> numpy dtypes.
DTYPES: dict[int, type[np.generic]] = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

Field = tuple[int, int, Any]  # (field number, wire type, value: int or bytes)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise GraphDefError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[Field]:
    """Yields the (number, wire type, value) of every field of one serialised message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == LENGTH:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise GraphDefError("truncated length-delimited field")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            yield number, wire, data[pos : pos + width]
            pos += width
        else:
            raise GraphDefError(f"unsupported wire type {wire}")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_ints(wire: int, value: Any) -> list[int]:
    if wire == VARINT:
        return [_signed(value)]
    out: list[int] = []
    pos = 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(_signed(item))
    return out


def _packed_floats(wire: int, value: Any) -> list[float]:
    raw = value if wire in (LENGTH, FIXED32) else b""
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@dataclass(frozen=True)
class Shape:
    dims: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


def parse_shape(data: bytes) -> Shape:
    dims: list[int] = []
    for number, _, value in fields(data):
        if number == 3 and value:
            return Shape(None)
        if number == 2:
            size = next((_signed(v) for n, _, v in fields(value) if n == 1), 0)
            dims.append(size)
    return Shape(tuple(dims))


def parse_tensor(data: bytes) -> npt.NDArray[Any]:
    """A TensorProto as a numpy array (packed content or the typed repeated fields)."""
    dtype_code, shape, content = 1, Shape(()), b""
    values: list[Any] = []
    for number, wire, value in fields(data):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = parse_shape(value)
        elif number == 4:
            content = value
        elif number == 5:
            values.extend(_packed_floats(wire, value))
        elif number in (7, 10, 11):
            values.extend(_packed_ints(wire, value))
        elif number == 6:
            values.extend(struct.unpack(f"<{len(value) // 8}d", value))
    if dtype_code not in DTYPES:
        raise GraphDefError(f"unsupported tensor dtype {dtype_code}")
    dtype = np.dtype(DTYPES[dtype_code])
    dims = shape.dims or ()
    if content:
        return np.frombuffer(content, dtype=dtype).reshape(dims).copy()
    array = np.asarray(values, dtype=dtype)
    count = int(np.prod(dims)) if dims else 1
    if array.size == count:
        return array.reshape(dims)
    if array.size == 1 or array.size == 0:  # one value stands for a tensor filled with it
        return np.full(dims, array[0] if array.size else 0, dtype=dtype)
    raise GraphDefError(f"tensor has {array.size} values for shape {dims}")


def _parse_list(data: bytes) -> list[Any]:
    items: list[Any] = []
    for number, wire, value in fields(data):
        if number == 2:
            items.append(value.decode())
        elif number in (3, 5, 6):
            items.extend(_packed_ints(wire, value))
        elif number == 4:
            items.extend(_packed_floats(wire, value))
        elif number == 7:
            items.append(parse_shape(value))
        elif number == 8:
            items.append(parse_tensor(value))
    return items


def parse_attr(data: bytes) -> Any:
    """The value of one AttrValue: str, int, float, bool, Shape, ndarray or list."""
    for number, wire, value in fields(data):
        if number == 1:
            return _parse_list(value)
        if number == 2:
            return value.decode(errors="replace")
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0] if wire == FIXED32 else 0.0
        if number == 5:
            return bool(value)
        if number == 7:
            return parse_shape(value)
        if number == 8:
            return parse_tensor(value)
    return None


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


def parse_node(data: bytes) -> Node:
    name = op = ""
    inputs: list[str] = []
    attrs: dict[str, Any] = {}
    for number, _, value in fields(data):
        if number == 1:
            name = value.decode()
        elif number == 2:
            op = value.decode()
        elif number == 3:
            inputs.append(value.decode())
        elif number == 5:
            entry = {n: v for n, _, v in fields(value)}
            attrs[entry.get(1, b"").decode()] = parse_attr(entry.get(2, b""))
    return Node(name=name, op=op, inputs=tuple(inputs), attrs=attrs)


def parse_graph(data: bytes) -> list[Node]:
    """The nodes of a serialised GraphDef, in file order."""
    return [parse_node(value) for number, _, value in fields(data) if number == 1]
