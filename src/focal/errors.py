"""Every error focal raises: an HTTP status, a public message and the docs section about it.

FocalError                  base: .status, .public (safe to show), .detail (logs only), .docs
├── OptionError       400   a URL/CLI option is unknown, duplicated, malformed or out of range
├── RequestError      400   the request's path is not a focal URL (not ASCII, names no source)
├── SignatureError    403   a signed URL is missing or wrong
├── ForbiddenError    403   a source outside the allowed roots/hosts
├── CrawlerError      403   a crawler rule refuses the request (carries a crawler-error code)
│   └── PaymentRequiredError 402  a charged crawler made no acceptable offer (crawler-price)
├── NotFoundError     404   no such source
├── EndpointError     404   no such endpoint
├── MethodError       405   a method other than GET or HEAD on an image URL
├── LimitError        413   a source over a byte, pixel, frame, animation or output limit
├── ImageError        415   the source is not a decodable image (empty, unreadable, not an image)
├── UpstreamError     502   a remote origin failed
├── BusyError         503   the image or detector queue is full (carries retry_after)
├── RedactionError    503   redact=faces without a working face detector (never served unredacted)
├── DeadlineError     504   the request's time ran out (its work is cancelled)
├── InternalError     500   a defect: the details are in the log only
├── SettingsError     500   a setting has a wrong value (the server does not start)
├── ModelMissingError 500   the face model is not installed (says which command installs it)
├── ModelInstallError 500   the face model could not be downloaded, read or checked
├── GraphError        500   a model graph focal cannot read, convert or run
│   ├── GraphDefError       the frozen TensorFlow graph's bytes are not a GraphDef focal reads
│   ├── ConversionError     the frozen graph holds an op the TensorFlow -> ONNX translator lacks
│   └── OnnxGraphError      the ONNX graph holds an op the ONNX -> torch translator lacks
└── RuntimeChoiceError 500  an inference runtime, precision or device unknown or not available
    └── TorchRuntimeError   the torch runtime's device or precision (or torch itself) unavailable

Each class's ``docs`` names the section of docs/errors.md that explains it; error responses
carry it as ``docs``. The face wing (focal.face) raises the last four; a detector worker's start
failure is rebuilt from its class name here, so every class a worker may raise lives in this
module.
"""

from __future__ import annotations

DOCS = "docs/errors.md"


class FocalError(Exception):
    status: int = 500
    docs: str = f"{DOCS}#focalerror"

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
    docs = f"{DOCS}#optionerror"


class RequestError(FocalError):
    status = 400
    docs = f"{DOCS}#requesterror"


class SignatureError(FocalError):
    status = 403
    docs = f"{DOCS}#signatureerror"


class ForbiddenError(FocalError):
    status = 403
    docs = f"{DOCS}#forbiddenerror"


class NotFoundError(FocalError):
    status = 404
    docs = f"{DOCS}#notfounderror"


class EndpointError(FocalError):
    status = 404
    docs = f"{DOCS}#endpointerror"


class MethodError(FocalError):
    status = 405
    docs = f"{DOCS}#methoderror"


class LimitError(FocalError):
    status = 413
    docs = f"{DOCS}#limiterror"


class ImageError(FocalError):
    status = 415
    docs = f"{DOCS}#imageerror"


class UpstreamError(FocalError):
    status = 502
    docs = f"{DOCS}#upstreamerror"


class BusyError(FocalError):
    status = 503
    docs = f"{DOCS}#busyerror"

    def __init__(self, public: str, *, retry_after: int = 1, detail: str | None = None) -> None:
        super().__init__(public, detail=detail)
        self.retry_after = retry_after


class RedactionError(FocalError):
    status = 503
    docs = f"{DOCS}#redactionerror"


class DeadlineError(FocalError):
    status = 504
    docs = f"{DOCS}#deadlineerror"


class InternalError(FocalError):
    status = 500
    docs = f"{DOCS}#internalerror"


class ModelMissingError(FocalError):
    status = 500
    docs = f"{DOCS}#modelmissingerror"


class SettingsError(FocalError):
    """A setting has a value of the wrong type, or a config file names an unknown setting."""

    status = 500
    docs = f"{DOCS}#settingserror"


class ModelInstallError(FocalError):
    """The model could not be downloaded, read or checked."""

    status = 500
    docs = f"{DOCS}#modelinstallerror"


class GraphError(FocalError):
    """A model graph focal cannot read, convert or run."""

    status = 500
    docs = f"{DOCS}#grapherror"


class GraphDefError(GraphError):
    """The bytes are not a GraphDef focal's reader understands."""

    docs = f"{DOCS}#graphdeferror"


class ConversionError(GraphError):
    """The frozen graph holds something the TensorFlow -> ONNX translator does not handle."""

    docs = f"{DOCS}#conversionerror"


class OnnxGraphError(GraphError):
    """The ONNX graph holds something the ONNX -> torch translator does not run."""

    docs = f"{DOCS}#onnxgrapherror"


class RuntimeChoiceError(FocalError):
    """An unknown runtime, precision or device, or one this machine cannot run."""

    status = 500
    docs = f"{DOCS}#runtimechoiceerror"


class TorchRuntimeError(RuntimeChoiceError):
    """An unknown torch precision or device, or a device this machine does not have."""

    docs = f"{DOCS}#torchruntimeerror"


def expected(option: str, what: str, received: object) -> OptionError:
    """The one form of every validation message: names the option, what was expected, what came."""
    return OptionError(f"Expected {what} for {option} but received {received!r}")


class CrawlerError(FocalError):
    """A crawler rule refuses the request (docs/crawlers.md); ``code`` is the crawler-error
    header's value, Cloudflare's pay per crawl error code."""

    status = 403
    docs = f"{DOCS}#crawlererror"

    def __init__(
        self, public: str, *, code: str, status: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(public, detail=detail, status=status)
        self.code = code

    def headers(self) -> dict[str, str]:
        return {"crawler-error": self.code}


class PaymentRequiredError(CrawlerError):
    """A charged crawler sent no offer, or one below the price: 402 with ``crawler-price``."""

    status = 402
    docs = f"{DOCS}#paymentrequirederror"

    def __init__(self, public: str, *, price: str, code: str = "MissingCrawlerPrice") -> None:
        super().__init__(public, code=code)
        self.price = price

    def headers(self) -> dict[str, str]:
        return super().headers() | {"crawler-price": self.price}
