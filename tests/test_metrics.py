"""/metrics of several workers: each worker's exposition merged into the answering one's."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from focal.server.metrics import STALE_AFTER_S, Gauges, Metrics, SharedMetrics, merge, parse
from focal.server.service_client import ServiceDetector


def exposition(status: int, requests: int, seconds: float, waiting: int, restarts: int) -> str:
    metrics = Metrics()
    for _ in range(requests):
        metrics.record(status, {"total": seconds * 1000}, "miss")
    metrics.loop_lag.observe(seconds)
    return metrics.render(Gauges(detector_restarts=restarts, image_jobs_waiting=waiting))


def value(text: str, sample: str) -> str:
    for family in parse(text).values():
        if sample in family.samples:
            return family.samples[sample]
    raise AssertionError(f"{sample} not in {text}")


def test_counters_and_histograms_are_summed_and_a_status_only_one_worker_saw_is_kept() -> None:
    own = exposition(200, 3, 0.02, waiting=1, restarts=4)
    other = exposition(404, 2, 0.2, waiting=2, restarts=4)
    text = merge(own, [(other, True)])
    assert value(text, 'focal_requests_total{status="200"}') == "3"
    assert value(text, 'focal_requests_total{status="404"}') == "2"
    assert value(text, 'focal_cache_requests_total{result="miss"}') == "5"
    assert value(text, 'focal_stage_seconds_count{stage="total"}') == "5"
    assert value(text, 'focal_stage_seconds_bucket{stage="total",le="0.025"}') == "3"
    assert value(text, 'focal_stage_seconds_bucket{stage="total",le="0.25"}') == "5"
    assert float(value(text, 'focal_stage_seconds_sum{stage="total"}')) == pytest.approx(0.46)
    # gauges of live workers add up; a peak is the largest; the host's own are not doubled
    assert value(text, "focal_image_jobs_waiting") == "3"
    assert float(value(text, "focal_event_loop_lag_max_seconds")) == 0.2
    assert value(text, "focal_detector_restarts_total") == "4"
    # still one HELP and one TYPE per family, samples after them
    lines = text.splitlines()
    assert lines.count("# TYPE focal_requests_total counter") == 1
    assert lines.index('focal_requests_total{status="404"} 2') < lines.index(
        "# TYPE focal_cache_requests_total counter"
    )


def test_an_exited_workers_counters_stay_and_its_gauges_go() -> None:
    own = exposition(200, 1, 0.01, waiting=0, restarts=0)
    gone = exposition(200, 7, 0.01, waiting=5, restarts=0)
    text = merge(own, [(gone, False)])
    assert value(text, 'focal_requests_total{status="200"}') == "8"
    assert value(text, "focal_image_jobs_waiting") == "0"


def test_one_worker_alone_renders_as_before() -> None:
    own = exposition(200, 2, 0.05, waiting=1, restarts=0)
    assert merge(own, []) == own


def test_workers_publish_atomically_and_an_old_snapshot_is_not_live(tmp_path: Path) -> None:
    first, second = SharedMetrics(tmp_path), SharedMetrics(tmp_path)
    assert first.path != second.path  # the same pid: still a file each
    first.publish(exposition(200, 1, 0.01, 0, 0))
    second.publish(exposition(200, 2, 0.01, 0, 0))
    assert [live for _, live in first.others()] == [True]
    assert value(first.others()[0][0], 'focal_requests_total{status="200"}') == "2"
    old = time.time() - STALE_AFTER_S - 1
    os.utime(second.path, (old, old))
    assert [live for _, live in first.others()] == [False]
    assert not list(tmp_path.glob(".*.tmp"))


def service_exposition(answered: int, reachable: bool, latency_ms: float) -> str:
    """One worker's exposition with the detector service client's families (detector_url)."""
    client = ServiceDetector("http://127.0.0.1:9", deadline_s=1.0)
    client.stats.answered = answered
    client.stats.reachable = reachable
    client.stats.latency_ms.observe(latency_ms)
    metrics = Metrics()
    metrics.extra.append(client.metric_lines)
    text = metrics.render(Gauges(detector_restarts=3))
    client.stop()
    return text


def test_each_workers_detector_service_client_counts_and_up_means_every_worker_reaches_it() -> None:
    own = service_exposition(answered=5, reachable=True, latency_ms=40.0)
    other = service_exposition(answered=7, reachable=False, latency_ms=900.0)
    text = merge(own, [(other, True)])
    assert value(text, "focal_detector_service_answers_total") == "12"
    assert value(text, "focal_detector_service_latency_ms_count") == "2"
    assert value(text, "focal_detector_service_up") == "0"  # one live worker cannot reach it
    assert value(merge(own, [(own, True)]), "focal_detector_service_up") == "1"
    assert value(merge(own, [(other, False)]), "focal_detector_service_up") == "1"  # exited
    assert value(text, "focal_detector_restarts_total") == "3"  # the host's pool: not doubled
