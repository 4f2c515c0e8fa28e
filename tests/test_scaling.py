"""Two real `focal serve` processes sharing a variant cache on object storage (moto's S3 server)
and a detection cache in Redis (redis-server), all on loopback: the second instance serves what
the first made without transforming, detects nothing the first detected, and both keep answering
correctly when the backends go away (the last test here stops them)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import httpx
import pytest
import pyvips
from tests.servers import S3_ENV, Child, start_moto, start_redis
from tests.test_server import DEMO, Server, start_server

pytestmark = pytest.mark.slow  # real servers on loopback

FACE = "fit=cover,gravity=face,zoom=0.5"


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Child, Child]]:
    folder = tmp_path_factory.mktemp("backends")
    moto = start_moto(folder)
    redis = start_redis(folder)
    import boto3

    admin = boto3.client(
        "s3",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    admin.create_bucket(Bucket="images")
    admin.create_bucket(Bucket="cache")
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        admin.put_object(Bucket="images", Key=f"originals/{name}", Body=(DEMO / name).read_bytes())
    yield moto, redis
    moto.stop()
    redis.stop()


@pytest.fixture(scope="module")
def instances(
    backends: tuple[Child, Child], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    moto, redis = backends
    folder = tmp_path_factory.mktemp("instances")
    root = folder / "root"
    root.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(DEMO / name, root / name)
    portrait = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg"))
    for i in range(8):  # distinct pixels: each one is new to every detection cache
        (root / f"p{i}.jpg").write_bytes(bytes(portrait.jpegsave_buffer(Q=70 + i)))
    args = [
        "--root",
        str(root),
        "--face",
        "--concurrency",
        "2",
        "--s3-prefixes",
        "s3://images/originals/",
        "--s3-endpoint-url",
        moto.url,
        "--s3-connect-timeout-s",
        "0.5",
        "--s3-read-timeout-s",
        "2",
        "--cache-backend",
        "s3",
        "--cache-s3-prefix",
        "s3://cache/variants/",
        "--detection-cache-url",
        f"redis://127.0.0.1:{redis.port}/0",
        "--shared-cache-timeout-s",
        "0.5",
    ]
    first = start_server(folder, args, env=S3_ENV)
    second = start_server(folder, args, env=S3_ENV)
    yield first, second
    first.stop()
    second.stop()


def metric(server: Server, name: str, labels: str = "", default: float | None = None) -> float:
    text = httpx.get(server.url("/metrics"), timeout=10).text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    if match is None and default is not None:
        return default
    assert match is not None, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def detections(server: Server) -> float:
    return metric(server, "focal_detector_detections_total")


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(server.url(path), timeout=30)


def width_of(response: httpx.Response) -> int:
    return int(pyvips.Image.new_from_buffer(response.content, "").width)


def test_the_second_instance_serves_the_first_instances_variant(
    instances: tuple[Server, Server],
) -> None:
    first, second = instances
    path = f"/cdn-cgi/image/width=256,height=256,{FACE}/s3://images/originals/astronaut.jpg"
    made = get(first, path)
    assert made.status_code == 200 and made.headers["focal-cache"] == "miss"
    assert made.headers["focal-gravity"] == "face" and width_of(made) == 256
    served = get(second, path)
    assert served.status_code == 200 and served.headers["focal-cache"] == "hit"
    assert served.content == made.content and served.headers["etag"] == made.headers["etag"]
    assert detections(second) == 0  # nothing was transformed there


def test_the_second_instance_detects_nothing_the_first_detected(
    instances: tuple[Server, Server],
) -> None:
    first, second = instances
    before = detections(first), detections(second)
    made = get(first, f"/cdn-cgi/image/width=200,height=200,{FACE}/grace_hopper.jpg")
    assert made.status_code == 200 and made.headers["focal-gravity"] == "face"
    assert detections(first) == before[0] + 1
    # another variant of the same image: transformed on the second instance, not detected again
    other = get(second, f"/cdn-cgi/image/width=120,height=160,{FACE}/grace_hopper.jpg")
    assert other.status_code == 200 and other.headers["focal-cache"] == "miss"
    assert other.headers["focal-gravity"] == "face" and width_of(other) == 120
    assert detections(second) == before[1]
    hits = metric(second, "focal_detection_cache_requests_total", '{result="hit"}')
    assert hits >= 1


def test_backends_going_away_turn_into_misses(
    backends: tuple[Child, Child], instances: tuple[Server, Server]
) -> None:
    moto, redis = backends
    first, second = instances
    widths = (101, 102, 103, 104, 105, 106, 107, 108)
    for i, width in enumerate(widths):
        if i == 3:  # mid-run: both shared caches go away
            redis.stop()
            moto.stop()
        server = first if i % 2 else second
        r = get(server, f"/cdn-cgi/image/width={width},{FACE}/p{i}.jpg")
        assert r.status_code == 200, r.text
        assert width_of(r) == width and r.headers["focal-gravity"] == "face"
        if i >= 3:
            assert r.headers["focal-cache"] == "miss"
    for server in instances:
        assert metric(server, "focal_shared_cache_errors_total", '{cache="variant"}') >= 1
        assert metric(server, "focal_shared_cache_errors_total", '{cache="detection"}') >= 1
        assert metric(server, "focal_requests_total", '{status="500"}', default=0) == 0
    # an s3 source is gone with its store: a clean upstream error, not a hang or a 500
    gone = get(first, "/cdn-cgi/image/width=50/s3://images/originals/astronaut.jpg")
    assert gone.status_code == 502
