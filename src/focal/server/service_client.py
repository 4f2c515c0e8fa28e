"""focal serve's side of the shared face detector service (``detector_url``,
``focal detector serve``, docs/scaling.md).

:class:`ServiceDetector` is a :class:`focal.detection.Detector` whose detections come from the
service over HTTP, in the Open Inference Protocol with binary tensors
(:mod:`focal.server.inference_protocol`): one request per image, the image already fitted to the
detection side and sent as raw uint8 bytes with its shape, the time left of the request's
detection deadline sent with it. The process loads no model and imports no inference runtime.

- A replica that fails (connection reset, 5xx) costs one retry, which the service's proxy
  routes to a live replica; past that, or past the deadline, :class:`DetectionFailed`: the
  pipeline answers the centre crop marked degraded, and the server does not cache it (the same
  path as a detector pool whose worker died). A service whose queue is full (503, twice) is
  :class:`focal.errors.BusyError`: 503 with Retry-After, as a full local pool answers.
- A thread checks the service every ``HEALTH_INTERVAL_S`` (the proxy's ``/-/healthz``, and the
  model's metadata once, for its id and detection side). While it does not answer, detections
  fail at once instead of waiting for their deadline; when it answers again they resume.
- The detection cache (:class:`focal.server.detection.caching.CachingDetector`, memory and Redis)
  stays in front of it: only images no cache knows are sent.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from focal.detection import DetectionFailed, Face, RGBImage
from focal.errors import BusyError
from focal.geometry import INFERENCE_CAP
from focal.server import inference_protocol as oip
from focal.server import logs

log = logging.getLogger("focal.detector")

HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 2.0
PROXY_HEALTH_PATH = "/-/healthz"  # Ray Serve's proxy: answers while the service runs
UNKNOWN_MODEL = "detector-service-not-reached"
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PARALLEL_IMAGES = 8  # a call with several images sends them at once (focal batch)
BUSY = "status_503"  # the service's queue is full (Serve's back pressure answer)
BUSY_RETRY_AFTER_S = 1


def caller_id() -> str:
    """Names this process in the service's batches (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> Iterable[str]:
        for bound, n in zip(self.buckets, self.counts, strict=True):
            yield f'{name}_bucket{{le="{bound:g}"}} {n}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {self.total:.3f}"
        yield f"{name}_count {self.count}"


@dataclass
class ServiceStats:
    """What /metrics shows of the service, as this process saw it."""

    answered: int = 0  # images the service answered
    retries: int = 0  # second tries after a failed first one
    errors: dict[str, int] = field(default_factory=dict)  # failed images, by reason
    shared_batches: int = 0  # answers from a batch that also held another process's images
    latency_ms: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS_MS))
    batch_size: _Histogram = field(default_factory=lambda: _Histogram(BATCH_BUCKETS))
    reachable: bool = False


class ServiceDetector:
    """A Detector (with weak candidates) answered by the detector service at ``url``."""

    def __init__(
        self,
        url: str,
        deadline_s: float,
        *,
        on_state: Callable[[str], None] | None = None,
        health_interval_s: float = HEALTH_INTERVAL_S,
        caller: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.deadline_s = deadline_s
        self.caller = caller or caller_id()
        self.stats = ServiceStats()
        self._on_state = on_state or (lambda _: None)
        self._interval = health_interval_s
        self._lock = threading.Lock()
        self._model_id: str | None = None
        self._max_side = INFERENCE_CAP
        self._ids = itertools.count(1)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        self._http = httpx.Client(limits=limits, trust_env=False)
        self._pool = ThreadPoolExecutor(PARALLEL_IMAGES, "focal-service-call")
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Check the service once (never raises: a service that is down is waited for), then
        keep checking it in the background."""
        self.check()
        self._thread = threading.Thread(target=self._watch, name="focal-service-health")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(HEALTH_TIMEOUT_S + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _watch(self) -> None:
        while not self._closing.wait(self._interval):
            self.check()

    def check(self) -> bool:
        """Whether the service answers now; learns its model the first time (and after every
        outage, in case it came back with another)."""
        try:
            reply = self._http.get(self.url + PROXY_HEALTH_PATH, timeout=HEALTH_TIMEOUT_S)
            if reply.status_code != 200:
                raise DetectionFailed(f"its proxy answered {reply.status_code}")
            if self._model_id is None or not self.stats.reachable:
                self._learn_model()
        except (httpx.HTTPError, DetectionFailed, ValueError, KeyError, TypeError) as error:
            self._set_reachable(False, _reason(error))
            return False
        self._set_reachable(True, "")
        return True

    def _learn_model(self) -> None:
        reply = self._http.get(self.url + oip.METADATA_PATH, timeout=self.deadline_s)
        if reply.status_code != 200:
            raise DetectionFailed(f"its model metadata answered {reply.status_code}")
        parameters = reply.json()["parameters"]
        with self._lock:
            self._model_id = str(parameters["model_id"])
            self._max_side = int(parameters["max_side"])

    def _set_reachable(self, reachable: bool, reason: str) -> None:
        was = self.stats.reachable
        self.stats.reachable = reachable
        if reachable:
            self._on_state("ready")
        else:
            self._on_state(f"unavailable: the detector service at {self.url} {reason}")
        if was != reachable:
            fields = {"url": self.url, "model": self._model_id or ""}
            if reachable:
                logs.event("detector service reachable", fields)
            else:
                logs.event(
                    "detector service unreachable: gravity=face falls back to centre",
                    fields | {"reason": reason},
                    logging.WARNING,
                )

    # -- the Detector interface -------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id or UNKNOWN_MODEL

    @property
    def max_side(self) -> int:
        return self._max_side

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        return [faces for faces, _ in self._each(images, candidates=False)]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        return self._each(images, candidates=True)

    def _each(
        self, images: Sequence[RGBImage], candidates: bool
    ) -> list[tuple[list[Face], list[Face]]]:
        deadline = time.monotonic() + self.deadline_s
        if len(images) <= 1:
            return [self._one(image, candidates, deadline) for image in images]
        futures = [self._pool.submit(self._one, i, candidates, deadline) for i in images]
        return [future.result() for future in futures]

    # -- one image --------------------------------------------------------------------------

    def _one(
        self, image: RGBImage, candidates: bool, deadline: float
    ) -> tuple[list[Face], list[Face]]:
        model = self._model_id
        if model is None or not self.stats.reachable:
            self._count_error("unreachable")
            raise DetectionFailed(f"the detector service at {self.url} is not reachable")
        started = time.monotonic()
        answer = self._ask(image, candidates, deadline)
        self._record(answer, (time.monotonic() - started) * 1000)
        if answer.parameters.get("model_id") != model:  # redeployed with another model
            self._model_id = None
            self._count_error("model_changed")
            raise DetectionFailed("the detector service changed its model")
        return answer.faces, answer.candidates

    def _ask(self, image: RGBImage, candidates: bool, deadline: float) -> oip.InferResponse:
        """One try, and one more on a replica fault while time is left."""
        reason = ""
        for attempt in range(2):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if attempt:
                with self._lock:
                    self.stats.retries += 1
            request = oip.InferRequest(
                image, candidates, left * 1000, self.caller, str(next(self._ids))
            )
            headers, body = oip.encode_request(request)
            try:
                reply = self._http.post(
                    self.url + oip.INFER_PATH, content=body, headers=headers, timeout=left
                )
            except httpx.TimeoutException:
                reason = "timeout"
                break
            except httpx.TransportError as error:
                reason = "unreachable"
                if isinstance(error, httpx.ConnectError):  # nothing listens: no retry helps
                    self._set_reachable(False, _reason(error))
                    break
                continue
            if reply.status_code == 200:
                try:
                    return oip.decode_response(reply.content, reply.headers.get(oip.HEADER_LENGTH))
                except oip.ProtocolError:
                    reason = "bad_answer"
                    continue
            reason = "timeout" if reply.status_code == 504 else f"status_{reply.status_code}"
            if reply.status_code < 500 or reply.status_code == 504:
                break
        self._count_error(reason or "timeout")
        if reason == BUSY:  # its queue is full (detector_service_queue), twice: as a full pool
            raise BusyError("face detection is busy, retry later", retry_after=BUSY_RETRY_AFTER_S)
        if reason == "timeout" or not reason:
            raise DetectionFailed(f"face detection passed its {self.deadline_s:g} s deadline")
        raise DetectionFailed(f"the detector service failed ({reason})")

    def _record(self, answer: oip.InferResponse, ms: float) -> None:
        parameters = answer.parameters
        with self._lock:
            self.stats.answered += 1
            self.stats.latency_ms.observe(ms)
            self.stats.batch_size.observe(float(parameters.get("batch_size", 1)))
            if int(parameters.get("batch_callers", 1)) > 1:
                self.stats.shared_batches += 1

    def _count_error(self, reason: str) -> None:
        with self._lock:
            self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1

    # -- /metrics ---------------------------------------------------------------------------

    def metric_lines(self) -> Iterable[str]:
        with self._lock:
            s = self.stats
            errors = dict(s.errors)
            latency = list(s.latency_ms.lines("focal_detector_service_latency_ms"))
            batch = list(s.batch_size.lines("focal_detector_service_batch_size"))
            answered, retries, shared = s.answered, s.retries, s.shared_batches
        yield "# HELP focal_detector_service_up Whether the detector service answers (1) or not."
        yield "# TYPE focal_detector_service_up gauge"
        yield f"focal_detector_service_up {int(self.stats.reachable)}"
        yield "# HELP focal_detector_service_answers_total Images the detector service answered."
        yield "# TYPE focal_detector_service_answers_total counter"
        yield f"focal_detector_service_answers_total {answered}"
        yield "# HELP focal_detector_service_retries_total Second tries after a failed first."
        yield "# TYPE focal_detector_service_retries_total counter"
        yield f"focal_detector_service_retries_total {retries}"
        yield "# HELP focal_detector_service_errors_total Images not answered, by reason."
        yield "# TYPE focal_detector_service_errors_total counter"
        for reason, n in sorted(errors.items()):
            yield f'focal_detector_service_errors_total{{reason="{reason}"}} {n}'
        yield (
            "# HELP focal_detector_service_shared_batches_total Answers from a service batch "
            "that also held another process's images."
        )
        yield "# TYPE focal_detector_service_shared_batches_total counter"
        yield f"focal_detector_service_shared_batches_total {shared}"
        yield "# HELP focal_detector_service_latency_ms Time to an answer, retries included."
        yield "# TYPE focal_detector_service_latency_ms histogram"
        yield from latency
        yield "# HELP focal_detector_service_batch_size Images in the service batch of an answer."
        yield "# TYPE focal_detector_service_batch_size histogram"
        yield from batch


def _reason(error: Exception) -> str:
    if isinstance(error, httpx.HTTPError):
        return f"does not answer ({type(error).__name__})"
    return f"does not answer ({error})"
