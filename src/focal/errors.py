"""Errors that carry an HTTP status and a public message.

FocalError                 base: .status, .public (safe to show), .detail (logs only)
├── OptionError      400   a URL/CLI option is unknown, duplicated, malformed or out of range
├── SignatureError   403   a signed URL is missing or wrong
├── ForbiddenError   403   a source outside the allowed roots/hosts
├── NotFoundError    404   no such source
├── LimitError       413   a source over a pixel, byte, frame or output limit
├── ImageError       415   the source is not a decodable image (empty, truncated, not an image)
├── UpstreamError    502   a remote origin failed
├── BusyError        503   the detector queue is full (carries retry_after)
├── ModelMissingError 500  the face model is not installed (says which command installs it)
├── ModelInstallError 500  the face model could not be downloaded, read or checked
├── GraphError       500   a model graph focal cannot read, convert or run
│   ├── GraphDefError      the frozen TensorFlow graph's bytes are not a GraphDef focal reads
│   ├── ConversionError    the frozen graph holds an op the TensorFlow -> ONNX translator lacks
│   └── OnnxGraphError     the ONNX graph holds an op the ONNX -> torch translator lacks
└── RuntimeChoiceError 500 an inference runtime, precision or device unknown or not available
    └── TorchRuntimeError  the torch runtime's device or precision (or torch itself) unavailable

The face wing (focal.face) raises the last four; a detector worker's start failure is rebuilt
from its class name here, so every class a worker may raise lives in this module.
"""

from __future__ import annotations


class FocalError(Exception):
    status: int = 500

    def __init__(
        self, public: str, *, detail: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail if detail is not None else public
        if status is not None:
            self.status = status


class OptionError(FocalError):
    status = 400


class SignatureError(FocalError):
    status = 403


class ForbiddenError(FocalError):
    status = 403


class NotFoundError(FocalError):
    status = 404


class LimitError(FocalError):
    status = 413


class ImageError(FocalError):
    status = 415


class UpstreamError(FocalError):
    status = 502


class BusyError(FocalError):
    status = 503

    def __init__(self, public: str, *, retry_after: int = 1, detail: str | None = None) -> None:
        super().__init__(public, detail=detail)
        self.retry_after = retry_after


class ModelMissingError(FocalError):
    status = 500


class ModelInstallError(FocalError):
    """The model could not be downloaded, read or checked."""

    status = 500


class GraphError(FocalError):
    """A model graph focal cannot read, convert or run."""

    status = 500


class GraphDefError(GraphError):
    """The bytes are not a GraphDef focal's reader understands."""


class ConversionError(GraphError):
    """The frozen graph holds something the TensorFlow -> ONNX translator does not handle."""


class OnnxGraphError(GraphError):
    """The ONNX graph holds something the ONNX -> torch translator does not run."""


class RuntimeChoiceError(FocalError):
    """An unknown runtime, precision or device, or one this machine cannot run."""

    status = 500


class TorchRuntimeError(RuntimeChoiceError):
    """An unknown torch precision or device, or a device this machine does not have."""


def expected(option: str, what: str, received: object) -> OptionError:
    """The one form of every validation message: names the option, what was expected, what came."""
    return OptionError(f"Expected {what} for {option} but received {received!r}")
