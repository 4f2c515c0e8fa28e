"""The face detector service: focal's detector as a Ray Serve application that every focal
instance shares (``focal detector serve``; docs/scaling.md). Needs the ``service`` extra.

    focal serve ×N ──HTTP, Open Inference Protocol──► Serve proxy ──► replica 1 (one detector)
    (ServiceDetector)                                              ──► replica 2 ...

Each replica builds the detector ``focal serve`` would (focal.face.sessions.open_detector:
ONNX Runtime or OpenVINO on CPU, torch on a GPU) and answers ``POST /v2/models/focal-faces/infer``
(focal.server.inference_protocol). Requests from every caller meet in ``@serve.batch``: at most
``max_batch`` images, waiting at most ``batch_wait_s`` after the first. A batch runs one group at
a time, grouped by padded canvas and by what is asked (faces, or faces and weak candidates), so
no image is padded to a companion's size: an answer never depends on what else was in its batch
(the same rule as focal.face.batching). An image whose caller's deadline has passed when its
batch starts is not run (504). Each answer names its batch (id, size, how many callers), which
the callers count in their /metrics.

The deployment autoscales between ``min_replicas`` and ``max_replicas`` (0: none after
``idle_s``), each replica holding ``replica_cpus`` CPUs and ``replica_gpus`` GPUs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from focal.detection import RGBImage, inference_cap
from focal.face.retinaface import padded_size
from focal.server import inference_protocol as oip
from focal.server.detection.worker import detect_each

log = logging.getLogger("ray.serve")

APP_NAME = oip.MODEL
MAX_BODY = oip.MAX_SIDE * oip.MAX_SIDE * 3 + 64 * 1024  # one capped image and its header


@dataclass(frozen=True)
class ServiceConfig:
    """How the service is deployed (from the detector_service_* settings)."""

    factory_args: tuple[tuple[str, object], ...]  # focal.face.sessions.DetectorConfig's
    max_batch: int = 8
    batch_wait_s: float = 0.01
    min_replicas: int = 1
    max_replicas: int = 2
    idle_s: float = 300.0
    target_requests: float = 4.0
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    queue: int = 64  # images the proxy holds for a replica, past which it answers 503; 0: any


@dataclass
class Item:
    """One image of a batch, as a replica holds it."""

    image: RGBImage
    candidates: bool
    caller: str
    deadline: float  # time.monotonic() past which the caller no longer waits


@dataclass(frozen=True)
class Outcome:
    faces: tuple[Any, ...] = ()
    weak: tuple[Any, ...] | None = None
    error: str = ""  # "expired", or why the detector failed on this image
    batch: dict[str, Any] | None = None


def canvas_groups(items: Sequence[Item]) -> list[list[int]]:
    """Indices of ``items`` grouped by padded canvas and by what they ask, in order of first
    arrival: each group is one run of the detector."""
    groups: dict[tuple[int, int, bool], list[int]] = {}
    for index, item in enumerate(items):
        height, width = item.image.shape[:2]
        groups.setdefault((*padded_size(height, width), item.candidates), []).append(index)
    return list(groups.values())


class FaceReplica:
    """One replica: one detector, answering batched inference requests."""

    def __init__(self, factory_args: tuple[tuple[str, object], ...], config: ServiceConfig) -> None:
        from focal.face import sessions  # the inference runtime, in the replica only

        self._detector = sessions.build_detector(**dict(factory_args))
        self._model_id = self._detector.model_id
        self._max_side = inference_cap(self._detector)
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        self._batches = itertools.count(1)
        self.detect.set_max_batch_size(config.max_batch)  # type: ignore[attr-defined]
        self.detect.set_batch_wait_timeout_s(config.batch_wait_s)  # type: ignore[attr-defined]

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if method == "GET" and path in (oip.READY_PATH, "/v2/health/live"):
            return Response(b"", status_code=200)
        if method == "GET" and path == oip.METADATA_PATH:
            return self._metadata()
        if method == "POST" and path == oip.INFER_PATH:
            return await self._infer(request)
        return _error(404, f"no such endpoint: POST {oip.INFER_PATH}, GET {oip.METADATA_PATH}")

    def _metadata(self) -> Response:
        body = {
            "name": oip.MODEL,
            "platform": "focal",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]}],
            "outputs": [
                {"name": "faces", "datatype": "FP64", "shape": [-1, 5]},
                {"name": "candidates", "datatype": "FP64", "shape": [-1, 5]},
            ],
            "parameters": {"model_id": self._model_id, "max_side": self._max_side},
        }
        return Response(json.dumps(body), media_type="application/json")

    async def _infer(self, request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            return _error(413, f"a request holds one image of at most {oip.MAX_SIDE} per side")
        body = bytearray()
        async for chunk in request.stream():  # a body sent without a length is capped too
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"a request holds one image of at most {oip.MAX_SIDE} per side")
        header_length = request.headers.get(oip.HEADER_LENGTH)
        try:
            asked = oip.decode_request(bytes(body), header_length)
        except oip.ProtocolError as error:
            return _error(400, str(error))
        left = (asked.deadline_ms / 1000) if asked.deadline_ms is not None else 60.0
        item = Item(asked.image, asked.candidates, asked.caller, time.monotonic() + left)
        try:
            outcome: Outcome = await asyncio.wait_for(self.detect(item), max(left, 0.001))
        except TimeoutError:
            return _error(504, "face detection passed the caller's deadline")
        if outcome.error == "expired":
            return _error(504, "face detection passed the caller's deadline")
        if outcome.error:
            return _error(500, outcome.error)
        parameters = {"model_id": self._model_id, **(outcome.batch or {})}
        headers, payload = oip.encode_response(
            asked.id,
            outcome.faces,
            outcome.weak if asked.candidates else None,
            parameters,
            binary=oip.wants_binary(bytes(body), header_length),
        )
        return Response(payload, headers=headers)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect(self, items: list[Item]) -> list[Outcome]:
        """Every caller's images that arrived together; runs off the replica's event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self._run, items)

    def _run(self, items: list[Item]) -> list[Outcome]:
        now = time.monotonic()
        live = [i for i, item in enumerate(items) if item.deadline > now]
        batch = {
            "batch_id": f"{self._name}#{next(self._batches)}",
            "batch_size": len(live),
            "batch_callers": len({items[i].caller for i in live}),
            "replica": self._name,
        }
        outcomes = [Outcome(error="expired")] * len(items)
        for group in canvas_groups([items[i] for i in live]):
            chosen = [live[g] for g in group]
            candidates = items[chosen[0]].candidates
            answers = detect_each(self._detector, [items[i].image for i in chosen], candidates)
            for index, answer in zip(chosen, answers, strict=True):
                outcomes[index] = _outcome(answer, candidates, batch)
        if live:
            log.info("focal batch %s", json.dumps(batch))
        return outcomes


def _outcome(answer: Any, candidates: bool, batch: dict[str, Any]) -> Outcome:
    if isinstance(answer, str):
        return Outcome(error=answer, batch=batch)
    if candidates:
        faces, weak = answer
        return Outcome(faces=tuple(faces), weak=tuple(weak), batch=batch)
    return Outcome(faces=tuple(answer), batch=batch)


def _error(status: int, message: str) -> Response:
    return Response(oip.error_body(message), status_code=status, media_type="application/json")


def application(config: ServiceConfig) -> Any:
    """The Serve application of ``config`` (bind it with serve.run)."""
    deployment: Any = serve.deployment(
        FaceReplica,
        name=APP_NAME,
        ray_actor_options={"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus},
        autoscaling_config={
            "min_replicas": config.min_replicas,
            "initial_replicas": max(config.min_replicas, 1),
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_requests,
            "downscale_delay_s": config.idle_s,
            "upscale_delay_s": 1.0,
        },
        max_ongoing_requests=max(2 * config.max_batch, 8),
        max_queued_requests=config.queue if config.queue > 0 else -1,
        health_check_period_s=2.0,
        health_check_timeout_s=30.0,
    )
    return deployment.bind(config.factory_args, config)
