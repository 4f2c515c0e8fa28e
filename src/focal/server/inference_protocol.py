"""The detector service's wire format: the Open Inference Protocol (KServe v2) over HTTP, with
its binary tensor extension (the one Triton and KServe speak), for one model, ``focal-faces``.

    POST /v2/models/focal-faces/infer
      Inference-Header-Content-Length: <length of the JSON header>
      body: JSON header, then the raw bytes of each binary tensor in the header's order

    request   inputs  "image"       UINT8 [height, width, 3]  the RGB image, already within the
                                                              detection side (raw bytes)
              parameters  candidates (bool), deadline_ms (what is left of the caller's
                          deadline), caller (an id of the asking process)
    response  outputs "faces"       FP64 [n, 5]   x1, y1, x2, y2, score per face
                      "candidates"  FP64 [m, 5]   weak candidates (only when asked for)
              parameters  model_id, batch_id, batch_size, batch_callers, replica

    GET /v2/health/ready, /v2/models/focal-faces (metadata: parameters model_id, max_side)

Every function here is pure (bytes in, bytes out): no sockets, no runtime. Boxes and scores go
as FP64 so that an answer has the very floats a detector in the same process gives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from focal.detection import Face, RGBImage
from focal.geometry import INFERENCE_CAP

MODEL = "focal-faces"
INFER_PATH = f"/v2/models/{MODEL}/infer"
METADATA_PATH = f"/v2/models/{MODEL}"
READY_PATH = "/v2/health/ready"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_TYPE = "application/octet-stream"
MAX_SIDE = INFERENCE_CAP  # an image is sent already fitted to the detection side
DTYPES: dict[str, np.dtype[Any]] = {
    "UINT8": np.dtype(np.uint8),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class ProtocolError(ValueError):
    """A request or answer that is not what this module writes (HTTP 400 on the service)."""


@dataclass(frozen=True)
class InferRequest:
    image: RGBImage
    candidates: bool = False
    deadline_ms: float | None = None
    caller: str = ""
    id: str = ""


@dataclass(frozen=True)
class InferResponse:
    faces: list[Face]
    candidates: list[Face] = field(default_factory=list)
    parameters: Mapping[str, Any] = field(default_factory=dict)


# -- framing -----------------------------------------------------------------------------------


def _frame(
    header: Mapping[str, Any], blobs: Sequence[bytes | memoryview]
) -> tuple[dict[str, str], bytes]:
    head = json.dumps(header, separators=(",", ":")).encode()
    headers = {HEADER_LENGTH: str(len(head)), "Content-Type": BINARY_TYPE}
    return headers, b"".join([head, *blobs])


def _unframe(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary part after it (empty for a JSON-only body)."""
    view = memoryview(body)
    try:
        length = len(body) if header_length is None else int(header_length)
        if not 0 < length <= len(body):
            raise ValueError(length)
        header = json.loads(bytes(view[:length]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the JSON header could not be read: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the JSON header must be an object")
    return header, view[length:]


def _tensors(entries: Any, rest: memoryview) -> dict[str, np.ndarray[Any, Any]]:
    """The named tensors of a header's inputs or outputs, binary ones read from ``rest``."""
    if not isinstance(entries, list):
        raise ProtocolError("inputs/outputs must be a list")
    found: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for entry in entries:
        try:
            name, datatype, shape = entry["name"], entry["datatype"], entry["shape"]
            dtype = DTYPES[datatype]
            shape = tuple(int(n) for n in shape)
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(
                "each tensor needs a name, a datatype (UINT8, FP32, FP64) and a shape"
            ) from None
        if any(n < 0 for n in shape):
            raise ProtocolError(f"tensor {name!r} has a negative dimension")
        count = int(np.prod(shape, dtype=np.int64))
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * dtype.itemsize or offset + size > len(rest):
                raise ProtocolError(f"tensor {name!r}: binary_data_size does not match its shape")
            array = np.frombuffer(rest[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            try:
                array = np.asarray(entry["data"], dtype=dtype).reshape(shape)
            except (KeyError, TypeError, ValueError):
                raise ProtocolError(f"tensor {name!r} has no data of its shape") from None
        found[str(name)] = array
    if offset != len(rest):
        raise ProtocolError("the body holds more bytes than its tensors")
    return found


# -- requests ----------------------------------------------------------------------------------


def encode_request(request: InferRequest) -> tuple[dict[str, str], bytes]:
    """Headers and body of one image's inference request (raw uint8 pixels)."""
    image = np.ascontiguousarray(request.image, dtype=np.uint8)
    parameters: dict[str, Any] = {"candidates": request.candidates, "caller": request.caller}
    if request.deadline_ms is not None:
        parameters["deadline_ms"] = round(request.deadline_ms, 1)
    outputs = [{"name": "faces", "parameters": {"binary_data": True}}]
    if request.candidates:
        outputs.append({"name": "candidates", "parameters": {"binary_data": True}})
    header = {
        "id": request.id,
        "parameters": parameters,
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": list(image.shape),
                "parameters": {"binary_data_size": image.nbytes},
            }
        ],
        "outputs": outputs,
    }
    return _frame(header, [image.data.cast("B")])


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    header, rest = _unframe(body, header_length)
    image = _tensors(header.get("inputs"), rest).get("image")
    if image is None or image.dtype != np.uint8:
        raise ProtocolError("expected an input 'image' of datatype UINT8")
    if image.ndim != 3 or image.shape[2] != 3 or not 0 < max(image.shape[:2]) <= MAX_SIDE:
        raise ProtocolError(
            f"expected 'image' of shape [height, width, 3], sides 1 to {MAX_SIDE}, "
            f"got {list(image.shape)}"
        )
    if min(image.shape[:2]) < 1:
        raise ProtocolError("'image' is empty")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters must be an object")
    deadline = parameters.get("deadline_ms")
    if deadline is not None and not isinstance(deadline, int | float):
        raise ProtocolError("deadline_ms must be a number")
    return InferRequest(
        image=image,
        candidates=bool(parameters.get("candidates", False)),
        deadline_ms=None if deadline is None else float(deadline),
        caller=str(parameters.get("caller", "")),
        id=str(header.get("id", "")),
    )


# -- responses ---------------------------------------------------------------------------------


def face_table(faces: Sequence[Face]) -> np.ndarray[Any, Any]:
    rows = [[*face.box, face.score] for face in faces]
    return np.asarray(rows, dtype="<f8").reshape(len(rows), 5)


def faces_of(table: np.ndarray[Any, Any]) -> list[Face]:
    if table.ndim != 2 or table.shape[1] != 5:
        raise ProtocolError(f"expected faces of shape [n, 5], got {list(table.shape)}")
    return [
        Face(box=(float(r[0]), float(r[1]), float(r[2]), float(r[3])), score=float(r[4]))
        for r in table.tolist()
    ]


def encode_response(
    request_id: str,
    faces: Sequence[Face],
    candidates: Sequence[Face] | None,
    parameters: Mapping[str, Any],
    binary: bool = True,
) -> tuple[dict[str, str], bytes]:
    """An inference answer: binary FP64 tensors (``binary``), or JSON data for clients that did
    not ask for binary outputs."""
    tables = [("faces", face_table(faces))]
    if candidates is not None:
        tables.append(("candidates", face_table(candidates)))
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, table in tables:
        entry: dict[str, Any] = {"name": name, "datatype": "FP64", "shape": list(table.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": table.nbytes}
            blobs.append(table.tobytes())
        else:
            entry["data"] = table.ravel().tolist()
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": MODEL, "id": request_id}
    header |= {"parameters": dict(parameters), "outputs": outputs}
    if binary:
        return _frame(header, blobs)
    return {"Content-Type": "application/json"}, json.dumps(header).encode()


def decode_response(body: bytes, header_length: str | None) -> InferResponse:
    header, rest = _unframe(body, header_length)
    tensors = _tensors(header.get("outputs"), rest)
    if "faces" not in tensors:
        raise ProtocolError("expected an output 'faces'")
    weak = tensors.get("candidates")
    parameters = header.get("parameters") or {}
    return InferResponse(
        faces=faces_of(tensors["faces"]),
        candidates=[] if weak is None else faces_of(weak),
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def wants_binary(body: bytes, header_length: str | None) -> bool:
    """Whether a request asked for binary outputs (this module's requests always do)."""
    if header_length is None:
        try:
            header = json.loads(body)
        except ValueError:
            return True
        outputs = header.get("outputs") if isinstance(header, dict) else None
        return bool(
            outputs
            and all(
                isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data")
                for o in outputs
            )
        )
    return True


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
