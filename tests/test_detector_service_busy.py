"""A real detector service (`focal detector serve`: a local Ray Serve, one replica, the real
model) whose queue is full answers 503, and focal's client turns that into BusyError (503 with
Retry-After, as a full local pool answers), not a degraded crop. Its own module: one Ray at a
time on this machine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tests.model_fixtures import require_model
from tests.servers import start_detector_service

from focal.detection import Face
from focal.errors import BusyError
from focal.server.service_client import ServiceDetector

pytestmark = pytest.mark.slow

ONE_SMALL_REPLICA = (
    "--detector-service-min-replicas",
    "1",
    "--detector-service-max-replicas",
    "1",
    "--detector-service-replica-cpus",
    "0.5",
    "--detector-service-max-batch",
    "1",
    "--detector-service-queue",
    "1",
)


@pytest.mark.timeout(600)
def test_a_full_service_queue_is_busy_for_the_caller_never_a_degraded_answer(
    tmp_path: Path,
) -> None:
    require_model()
    service = start_detector_service(tmp_path, args=ONE_SMALL_REPLICA)
    detector = ServiceDetector(service.url, 120.0, health_interval_s=60)
    detector.start()
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8) for _ in range(24)]

    def outcome(image: np.ndarray) -> list[Face] | Exception:
        try:
            return detector.detect([image])[0]
        except Exception as error:  # what the caller would see
            return error

    try:
        with ThreadPoolExecutor(len(images)) as pool:  # far more than 8 running + 1 queued
            outcomes = list(pool.map(outcome, images))
        busy = [o for o in outcomes if isinstance(o, BusyError)]
        answered = [o for o in outcomes if isinstance(o, list)]
        assert busy and answered, outcomes
        assert len(busy) + len(answered) == len(images), outcomes  # nothing else, no failure
        assert all(error.retry_after >= 1 for error in busy)
        lines = list(detector.metric_lines())
        assert f'focal_detector_service_errors_total{{reason="status_503"}} {len(busy)}' in lines
        assert detector.detect([images[0]]) is not None  # and it answers again once drained
    finally:
        detector.stop()
        service.stop()
