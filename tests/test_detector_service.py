"""One real face detector service (`focal detector serve`: a local Ray, Ray Serve, two replicas
with the real model) and two real `focal serve` instances using it (detector_url) and sharing a
redis-server (detection_cache_url), all on loopback. One service serves the whole module (Ray
starts slowly); the last test stops it and starts it again.

- Face crops through the service are byte-identical to the same requests answered by an
  instance with its own detector pool, and a service batch held both instances' images (as the
  service's answers report it, counted in each instance's /metrics).
- kill -9 of one replica under a bounded load: no request fails (retried, or degraded and not
  cached), and Serve replaces the replica.
- The whole service stopped: face requests answer the degraded crop, resizes are untouched,
  /healthz says so, an image already in Redis is still face-cropped; the service back on its
  port: face crops resume, focal not restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import pyvips
from tests.model_fixtures import require_model
from tests.servers import Child, start_detector_service, start_redis
from tests.test_server import DEMO, Server, start_server
from tests.test_workers import children

from focal.cli import main
from focal.server import inference_protocol as oip

pytestmark = pytest.mark.slow  # a real Ray Serve and real servers on loopback

FACE = "fit=cover,gravity=face,zoom=0.5"
IMAGES = 24  # distinct pixels: each is new to every detection cache
SERVICE_ARGS = (
    "--detector-service-min-replicas",
    "2",
    "--detector-service-max-replicas",
    "2",
    "--detector-service-replica-cpus",
    "0.5",
    "--detector-service-batch-wait-ms",
    "150",
    "--detector-service-max-batch",
    "8",
)


class Holder:
    """The running service (the last test replaces it)."""

    def __init__(self, folder: Path, child: Child) -> None:
        self.folder = folder
        self.child = child


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holder]:
    require_model()
    folder = tmp_path_factory.mktemp("service")
    holder = Holder(folder, start_detector_service(folder, args=SERVICE_ARGS))
    yield holder
    holder.child.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("root")
    portrait = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg"))
    for i in range(IMAGES):
        (folder / f"p{i}.jpg").write_bytes(bytes(portrait.jpegsave_buffer(Q=60 + i)))
    shutil.copy(DEMO / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    return folder


def instance_args(root: Path, cache: Path) -> list[str]:
    return ["--root", str(root), "--face", "--concurrency", "2", "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def instances(
    service: Holder, root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    folder = tmp_path_factory.mktemp("instances")
    redis = start_redis(folder)  # the shared detection cache, in front of the service
    url = ["--detector-url", service.child.url, "--detector-deadline-s", "8"]
    url += ["--detection-cache-url", f"redis://127.0.0.1:{redis.port}/0"]
    first = start_server(folder, [*instance_args(root, folder / "c1"), *url])
    second = start_server(folder, [*instance_args(root, folder / "c2"), *url])
    yield first, second
    first.stop()
    second.stop()
    redis.stop()


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.url("/metrics"), timeout=10).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(server.url(path), timeout=60)


def crop_path(i: int, width: int = 200) -> str:
    return f"/cdn-cgi/image/width={width},height=200,{FACE}/p{i}.jpg"


def degraded(response: httpx.Response) -> bool:
    return response.headers.get("cache-control") == "no-store"


def replica_of(url: str, pixels: np.ndarray) -> str:
    """Which replica answers one direct inference request."""
    headers, body = oip.encode_request(oip.InferRequest(pixels, caller="test-probe"))
    reply = httpx.post(url + oip.INFER_PATH, content=body, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    answer = oip.decode_response(reply.content, reply.headers.get(oip.HEADER_LENGTH))
    return str(answer.parameters["replica"])


def replicas(url: str, want: int, seen: set[str] | None = None, timeout: float = 240) -> set[str]:
    """Replica names answering probes until ``want`` names not in ``seen`` appear."""
    found: set[str] = set()
    deadline = time.monotonic() + timeout
    rng = np.random.default_rng(1)
    while len(found - (seen or set())) < want and time.monotonic() < deadline:
        found.add(replica_of(url, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    return found - (seen or set())


@pytest.mark.timeout(900)
def test_crops_match_the_local_pool_and_a_batch_holds_both_instances(
    service: Holder, instances: tuple[Server, Server], root: Path, tmp_path: Path
) -> None:
    first, second = instances
    bad = httpx.post(service.child.url + oip.INFER_PATH, content=b"{}", timeout=60)
    assert bad.status_code == 400 and "inputs" in bad.json()["error"]
    big = httpx.post(
        service.child.url + oip.INFER_PATH, content=b"\0" * (oip.MAX_SIDE**2 * 4), timeout=60
    )
    assert big.status_code == 413
    for server in instances:  # no model and no inference runtime in the image process
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "onnxruntime" not in maps and "openvino" not in maps
        assert get(server, "/healthz").json()["face"] == "ready"
    answers: dict[int, bytes] = {}
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, IMAGES, 8):  # rounds of 8 at once, 4 on each instance
            chunk = range(start, start + 8)
            servers = [first if i % 2 else second for i in chunk]
            replies = list(pool.map(lambda s, i: get(s, crop_path(i)), servers, chunk))
            for i, reply in zip(chunk, replies, strict=True):
                assert reply.status_code == 200 and reply.headers["focal-gravity"] == "face"
                assert not degraded(reply)
                answers[i] = reply.content
            if min(metric(s, "focal_detector_service_shared_batches_total") for s in instances):
                break
    # the service's own account of its batches: each instance got answers from batches that
    # also held the other's images (the only other caller)
    for server in instances:
        assert metric(server, "focal_detector_service_shared_batches_total") >= 1
        assert metric(server, "focal_detector_service_answers_total") >= 1
    local = start_server(tmp_path, instance_args(root, tmp_path / "c"))
    try:
        for i, content in answers.items():
            mine = get(local, crop_path(i))
            assert mine.status_code == 200 and mine.headers["focal-gravity"] == "face"
            assert mine.content == content, f"p{i}.jpg: the service's crop differs"
    finally:
        local.stop()


@pytest.mark.timeout(900)
def test_a_replica_killed_under_load_costs_no_request(
    service: Holder, instances: tuple[Server, Server], root: Path
) -> None:
    url = service.child.url
    before = replicas(url, 2)
    assert len(before) == 2
    victim = int(sorted(before)[0].rsplit(":", 1)[1])
    portrait = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg"))
    for n in range(48):  # new to every detection cache: each one reaches the service
        copy = portrait.resize((400 + n) / portrait.width)
        (root / f"k{n}.jpg").write_bytes(bytes(copy.jpegsave_buffer(Q=85)))
    paths = [
        (instances[n % 2], f"/cdn-cgi/image/width=120,height=120,{FACE}/k{n}.jpg")
        for n in range(48)
    ]

    def ask(n: int) -> httpx.Response:
        if n == 8:  # a few answers in: the replica goes, mid-load
            os.kill(victim, signal.SIGKILL)
        server, path = paths[n]
        return get(server, path)

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(len(paths))))
    assert [r.status_code for r in replies] == [200] * len(paths)  # nothing failed
    for (server, path), reply in zip(paths, replies, strict=True):
        if degraded(reply):  # not cached: asked again, it is detected and face-cropped
            again = get(server, path)
            assert again.headers["focal-cache"] == "miss" and not degraded(again)
        else:
            assert reply.headers["focal-gravity"] == "face"
    retries = sum(metric(s, "focal_detector_service_retries_total") for s in instances)
    hit = sum(map(degraded, replies))
    # Serve's proxy itself sends a request whose replica died to another one, so the client's
    # retry and the degraded answer are the second and third lines (docs/scaling.md)
    print(f"kill -9 of replica pid {victim}: {hit} degraded, {retries:g} retried by focal")
    # Serve starts a replica in the killed one's place
    assert replicas(url, 1, seen=before), "no new replica replaced the killed one"


@pytest.mark.timeout(900)
def test_focal_batch_crops_through_the_service_as_transform_does(
    service: Holder, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg", "chelsea.jpg"):
        shutil.copy(DEMO / name, photos / name)
    options = ["--options", "width=160,height=160,fit=cover,gravity=face,zoom=0.5,format=json"]
    assert main(["transform", str(photos), "-o", str(tmp_path / "cli"), *options]) == 0
    ray_args = ["--num-cpus", "1", "--detector-url", service.child.url]
    assert main(["batch", str(photos), str(tmp_path / "ray"), *options, *ray_args]) == 0
    found = 0
    for name in ("astronaut.json", "grace_hopper.json", "chelsea.json"):
        expected = json.loads((tmp_path / "cli" / name).read_text())
        got = json.loads((tmp_path / "ray" / name).read_text())
        assert got["crop"] == expected["crop"] and got["faces"] == expected["faces"], name
        found += len(got["faces"])
    assert found >= 2  # the crops depend on faces the service found


@pytest.mark.timeout(900)
def test_two_workers_crop_faces_through_the_service(
    service: Holder, root: Path, tmp_path: Path
) -> None:
    """focal serve --workers 2 with detector_url: each worker reaches the service itself (no
    detector pool is started for them), every crop is a face crop, none degraded."""
    args = [*instance_args(root, tmp_path / "cache"), "--workers", "2"]
    args += ["--detector-url", service.child.url, "--detector-deadline-s", "20"]
    server = start_server(tmp_path, args)
    try:
        paths = [crop_path(i, width=150) for i in range(IMAGES)]
        with ThreadPoolExecutor(4) as pool:  # several connections: the kernel shares them out
            replies = list(pool.map(lambda path: get(server, path), paths))
        for reply in replies:
            assert reply.status_code == 200, reply.text
            assert reply.headers["focal-gravity"] == "face" and not degraded(reply)
        assert metric(server, "focal_detector_service_up") == 1
        # every worker's answers, counted once each (a worker publishes its counts within 0.1 s)
        answers = "focal_detector_service_answers_total"
        deadline = time.monotonic() + 10
        while metric(server, answers) < IMAGES and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(server, answers) == IMAGES
        workers = children(server.process.pid)
        assert len(workers) >= 2
        spawned = [*workers, *(pid for worker in workers for pid in children(worker))]
        commands = []
        for pid in spawned:
            with contextlib.suppress(OSError):  # a process that has just exited
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert not [c for c in commands if b"focal.server.detection.worker" in c]  # no pool
    finally:
        server.stop()


@pytest.mark.timeout(900)
def test_a_stopped_service_degrades_face_crops_until_it_is_back(
    service: Holder, instances: tuple[Server, Server], root: Path
) -> None:
    portrait = pyvips.Image.new_from_file(str(DEMO / "grace_hopper.jpg"))
    for i in range(IMAGES, IMAGES + 4):  # new to every detection cache
        (root / f"p{i}.jpg").write_bytes(bytes(portrait.jpegsave_buffer(Q=60 + i)))
    paths = [crop_path(i) for i in range(IMAGES, IMAGES + 4)]
    known = f"/cdn-cgi/image/width=140,height=140,{FACE}/p{IMAGES + 4}.jpg"
    (root / f"p{IMAGES + 4}.jpg").write_bytes(bytes(portrait.jpegsave_buffer(Q=99)))
    assert get(instances[0], known).headers["focal-gravity"] == "face"  # detected, into Redis
    port = service.child.port
    service.child.stop()
    for server in instances:
        deadline = time.monotonic() + 30
        while get(server, "/healthz").json()["face"] == "ready" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert get(server, "/healthz").json()["face"].startswith("unavailable: the detector")
        assert metric(server, "focal_detector_service_up") == 0
        for path in paths:
            reply = get(server, path)
            assert reply.status_code == 200 and degraded(reply)
            assert "detection failed" in reply.headers["focal-gravity-fallback"]
        resize = get(server, "/cdn-cgi/image/width=90/grace_hopper.jpg")
        assert resize.status_code == 200 and not degraded(resize)
    # an image one instance had detected: the other crops it from the shared detection cache
    other = get(instances[1], known.replace("width=140", "width=130"))
    assert other.headers["focal-gravity"] == "face" and not degraded(other)
    service.child = start_detector_service(service.folder, port=port, args=SERVICE_ARGS)
    for server in instances:
        deadline = time.monotonic() + 60
        while get(server, "/healthz").json()["face"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.5)
        for path in paths:
            reply = get(server, path)
            assert reply.status_code == 200 and reply.headers["focal-gravity"] == "face"
            assert not degraded(reply)
