"""Object-storage sources, the S3 variant cache and the Redis detection cache, in process,
against real servers on loopback: moto's S3-compatible server and redis-server."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips
from tests.servers import S3_ENV, Child, free_port, start_moto, start_redis

from focal.detection import Face, RGBImage
from focal.errors import ForbiddenError, LimitError, NotFoundError, UpstreamError
from focal.server.app import create_app
from focal.server.cache import Meta
from focal.server.detection.caching import (
    CachingDetector,
    RedisFaces,
    decode_answer,
    decode_faces,
    encode_answer,
    encode_faces,
)
from focal.server.objectstore import (
    Breaker,
    S3Origin,
    S3VariantCache,
    Stores,
    StoreSettings,
    is_remote_or_s3,
    parse,
)
from focal.server.settings import Settings
from focal.server.variants import Variants

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    child = start_moto(tmp_path_factory.mktemp("moto"))
    import boto3

    admin = boto3.client("s3", endpoint_url=child.url)
    for bucket in ("images", "other", "cache"):
        admin.create_bucket(Bucket=bucket)
    admin.put_object(
        Bucket="images", Key="originals/astronaut.jpg", Body=(DEMO / "astronaut.jpg").read_bytes()
    )
    admin.put_object(Bucket="images", Key="originals/big.bin", Body=b"x" * 5000)
    admin.put_object(Bucket="images", Key="private/secret.jpg", Body=b"secret")
    admin.put_object(Bucket="other", Key="originals/astronaut.jpg", Body=b"other")
    yield child
    child.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    child = start_redis(tmp_path_factory.mktemp("redis"))
    yield child
    child.stop()


def stores(endpoint: str, timeout: float = 2.0) -> Stores:
    return Stores(
        StoreSettings(endpoint, "us-east-1", connect_timeout_s=timeout, read_timeout_s=timeout)
    )


def origin(moto: Child, max_bytes: int = 1_000_000) -> S3Origin:
    return S3Origin(["s3://images/originals/"], max_bytes, stores(moto.url))


# ---- sources ---------------------------------------------------------------------------------


def test_an_allowed_object_is_fetched_with_a_content_identity(moto: Child) -> None:
    source = asyncio.run(origin(moto).fetch("s3://images/originals/astronaut.jpg"))
    assert source.data == (DEMO / "astronaut.jpg").read_bytes()
    assert source.identity.startswith("s3:s3://images/originals/astronaut.jpg:")
    assert source.last_modified is not None


@pytest.mark.parametrize(
    "url",
    [
        "s3://images/private/secret.jpg",  # outside the prefix
        "s3://other/originals/astronaut.jpg",  # another bucket
        "s3://images/originals/../private/secret.jpg",
        "s3://images/originals/%2e%2e/private/secret.jpg",
        "s3://key:secret@images/originals/astronaut.jpg",  # credentials never from the URL
        "s3://images/originals/a\\b.jpg",
        "s3://images/originals/a%00.jpg",
        "s3://images:9000/originals/astronaut.jpg",
    ],
)
def test_sources_outside_the_allowlist_are_refused_before_any_request(
    moto: Child, url: str
) -> None:
    with pytest.raises(ForbiddenError):
        asyncio.run(origin(moto).fetch(url))


def test_a_missing_object_is_404(moto: Child) -> None:
    with pytest.raises(NotFoundError):
        asyncio.run(origin(moto).fetch("s3://images/originals/missing.jpg"))


def test_an_object_over_max_bytes_is_refused(moto: Child) -> None:
    with pytest.raises(LimitError):
        asyncio.run(origin(moto, max_bytes=4999).fetch("s3://images/originals/big.bin"))
    assert len(asyncio.run(origin(moto, 5000).fetch("s3://images/originals/big.bin")).data) == 5000


def test_a_dead_store_is_an_upstream_error() -> None:
    dead = S3Origin(["s3://images/"], 1000, stores(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UpstreamError):
        asyncio.run(dead.fetch("s3://images/a.jpg"))


def test_malformed_prefixes_are_start_up_errors() -> None:
    for prefix in ("https://images/x/", "s3://Bad_Bucket/", "s3://images/../x/"):
        with pytest.raises(ValueError, match="s3://bucket/prefix/"):
            S3Origin([prefix], 1000, stores("http://127.0.0.1:1"))


def test_s3_sources_are_not_local() -> None:
    assert is_remote_or_s3("s3://images/a.jpg") and is_remote_or_s3("https://x.test/a.jpg")
    assert not is_remote_or_s3("a.jpg")
    assert parse("s3://images/a%20b.jpg").key == "a b.jpg"


# ---- the shared variant cache ---------------------------------------------------------------


def meta(data: bytes) -> Meta:
    return Meta("image/jpeg", "jpeg", 10, 10, "centre", '"e"', False, len(data))


def test_variant_cache_round_trip_and_write_once(moto: Child) -> None:
    one = S3VariantCache("s3://cache/variants/", stores(moto.url))
    two = S3VariantCache("s3://cache/variants/", stores(moto.url))  # another instance
    key = "ab" + "0" * 62
    assert one.get(key) is None
    one.put(key, meta(b"first"), b"first")
    entry = two.get(key)
    assert entry is not None and entry.data == b"first"
    two.put(key, meta(b"other"), b"other")  # a second writer does not replace the object
    again = one.get(key)
    assert again is not None and again.data == b"first"
    assert one.breaker.errors == 0 and two.breaker.errors == 0


def test_a_partial_object_is_a_miss(moto: Child) -> None:
    cache = S3VariantCache("s3://cache/variants/", stores(moto.url))
    key = "cd" + "1" * 62
    import obstore

    obstore.put(stores(moto.url).store("cache"), cache.path_for(key), b"FCV1\x00\x00")
    assert cache.get(key) is None and cache.breaker.errors == 0


def blackhole() -> tuple[socket.socket, int]:
    """A listening socket that never answers: requests to it can only time out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, int(sock.getsockname()[1])


def test_a_dead_or_hung_store_is_a_miss_counted_as_an_error() -> None:
    dead = stores(f"http://127.0.0.1:{free_port()}")
    refused = S3VariantCache("s3://cache/v/", dead, Breaker("variant", pause_s=600))
    sock, port = blackhole()
    with sock:
        silent = stores(f"http://127.0.0.1:{port}", timeout=0.3)
        hung = S3VariantCache("s3://cache/v/", silent, Breaker("variant", pause_s=600))
        for cache in (refused, hung):
            assert cache.get("ef" + "2" * 62) is None
            cache.put("ef" + "2" * 62, meta(b"x"), b"x")  # no exception either
            assert cache.breaker.errors == 1  # then skipped while the breaker is open
            assert cache.get("ef" + "2" * 62) is None
            assert cache.breaker.skipped >= 1


# ---- the shared detection cache -------------------------------------------------------------


class Counting:
    """A detector answering one face per image from its first pixel, counting images."""

    model_id = "counting-1"

    def __init__(self) -> None:
        self.images = 0
        self.lock = threading.Lock()

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        with self.lock:
            self.images += len(images)
        return [
            [Face((float(i[0, 0, 0]), 1.0, 2.5, 3.25), 0.875, ((1.0, 2.0), (3.0, 4.0)))]
            for i in images
        ]


def image(value: int) -> RGBImage:
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    array[0, 0, 0] = value
    return array


def boxes_and_scores(found: list[list[Face]]) -> list[list[Face]]:
    """What the caches keep and answer: the faces without their landmarks."""
    return [[face.box_and_score() for face in faces] for faces in found]


def test_boxes_and_scores_survive_the_round_trip_exactly_and_landmarks_are_not_kept() -> None:
    faces = Counting().detect([image(7)])[0]
    assert faces[0].landmarks  # the detector gives them; the cache must not keep them
    assert decode_faces(encode_faces(faces)) == boxes_and_scores([faces])[0]
    assert b"3.0" not in encode_faces(faces) and b"4.0" not in encode_faces(faces)
    assert decode_faces(b"not json") is None


def redis_only(inner: Counting, url: str, **kwargs: Any) -> CachingDetector:
    """The detection cache with its Redis tier and no in-process LRU."""
    return CachingDetector(inner, max_entries=0, shared=RedisFaces(url, **kwargs))


def test_instances_detect_each_image_once(redis_server: Child) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    first_inner, second_inner = Counting(), Counting()
    first = redis_only(first_inner, url)
    second = redis_only(second_inner, url)
    expected = boxes_and_scores(Counting().detect([image(1), image(2)]))
    assert first.detect([image(1), image(2)]) == expected
    third = boxes_and_scores(Counting().detect([image(3)]))[0]
    assert second.detect([image(2), image(1), image(3)]) == [expected[1], expected[0], third]
    assert first_inner.images == 2 and second_inner.images == 1  # only image 3 was new
    assert second.hits == 2 and second.misses == 1
    assert isinstance(second.shared, RedisFaces)
    assert (second.shared.hits, second.shared.misses) == (2, 1)


def test_the_lru_answers_before_redis_and_redis_fills_it(redis_server: Child) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    first_inner, second_inner = Counting(), Counting()
    first = CachingDetector(first_inner, shared=RedisFaces(url))
    second = CachingDetector(second_inner, shared=RedisFaces(url))
    first.detect([image(11)])
    assert (
        second.detect([image(11)])
        == second.detect([image(11)])
        == boxes_and_scores(Counting().detect([image(11)]))
    )
    assert first_inner.images == 1 and second_inner.images == 0
    assert isinstance(second.shared, RedisFaces)
    assert (second.shared.hits, second.shared.misses) == (1, 0)  # the second came from the LRU
    assert (second.hits, second.misses) == (2, 0) and len(second) == 1


class CountingWeak(Counting):
    """Counting that also answers one weak candidate per image."""

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        weak = [[Face((float(i[0, 0, 0]), 0.0, 1.0, 1.0), 0.125)] for i in images]
        return list(zip(self.detect(images), weak, strict=True))


def test_faces_and_candidates_survive_the_round_trip_exactly() -> None:
    ((faces, weak),) = CountingWeak().detect_with_candidates([image(7)])
    answer = (tuple(faces), tuple(weak))
    kept = tuple(boxes_and_scores([faces])[0]), tuple(weak)
    assert decode_answer(encode_answer(answer)) == kept
    assert decode_answer(b"[1]") is None
    assert decode_answer(encode_faces(faces)) is None  # a bare list of faces is a miss


def test_instances_share_faces_and_candidates_under_keys_of_their_own(
    redis_server: Child,
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    first_inner, second_inner = CountingWeak(), CountingWeak()
    first = CachingDetector(first_inner, shared=RedisFaces(url))
    second = CachingDetector(second_inner, shared=RedisFaces(url))
    ((faces, weak),) = CountingWeak().detect_with_candidates([image(12)])
    expected = [(boxes_and_scores([faces])[0], weak)]
    assert first.detect_with_candidates([image(12)]) == expected
    assert second.detect_with_candidates([image(12)]) == expected
    assert second_inner.images == 0 and second.hits == 1
    second.detect([image(12)])  # faces alone are not the pair: asked for again
    assert second_inner.images == 1


def test_a_dead_redis_is_a_miss_answered_by_the_detector() -> None:
    inner = Counting()
    sock, port = blackhole()
    with sock:
        for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis://127.0.0.1:{port}/0"):
            breaker = Breaker("detection", pause_s=600)
            cache = redis_only(inner, url, timeout_s=0.3, breaker=breaker)
            assert cache.detect([image(5)]) == boxes_and_scores(Counting().detect([image(5)]))
            assert breaker.errors == 1
            # skipped now
            assert cache.detect([image(5)]) == boxes_and_scores(Counting().detect([image(5)]))
            assert breaker.skipped >= 1
    assert inner.images == 4


# ---- a cached variant of an s3 source, found by the source's HEAD -------------------------------


def test_identify_is_a_head_giving_the_identity_a_fetch_gives(moto: Child) -> None:
    s3 = origin(moto)
    info = asyncio.run(s3.identify("s3://images/originals/astronaut.jpg"))
    fetched = asyncio.run(s3.fetch("s3://images/originals/astronaut.jpg"))
    assert info is not None and info.identity == fetched.identity
    assert ":etag:" in info.identity and info.last_modified == fetched.last_modified
    with pytest.raises(NotFoundError):
        asyncio.run(s3.identify("s3://images/originals/missing.jpg"))
    with pytest.raises(LimitError):  # the declared size is checked before anything is read
        asyncio.run(origin(moto, max_bytes=4999).identify("s3://images/originals/big.bin"))
    with pytest.raises(ForbiddenError):
        asyncio.run(s3.identify("s3://images/private/secret.jpg"))
    dead = S3Origin(["s3://images/"], 1000, stores(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UpstreamError):
        asyncio.run(dead.identify("s3://images/a.jpg"))


def test_a_new_write_of_the_object_is_a_new_identity(moto: Child) -> None:
    import boto3

    admin = boto3.client("s3", endpoint_url=moto.url)
    s3, url = origin(moto), "s3://images/originals/changing.jpg"
    admin.put_object(Bucket="images", Key="originals/changing.jpg", Body=b"one")
    first = asyncio.run(s3.identify(url))
    admin.put_object(Bucket="images", Key="originals/changing.jpg", Body=b"two")
    second = asyncio.run(s3.identify(url))
    assert first is not None and second is not None and first.identity != second.identity


def source_gets(moto: Child, key: str) -> int:
    """GET requests for one object in moto's request log (HEADs are not counted)."""
    return moto.log.read_text(errors="replace").count(f'"GET /images/{key} HTTP')


async def get_twice(app: Any, path: str) -> list[Any]:
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get(path), await client.get(path)]
    finally:
        app.state.service.workers.shutdown()


def s3_server_settings(moto: Child, tmp_path: Path) -> Settings:
    return Settings(
        cache_dir=tmp_path,
        face=False,
        s3_prefixes=("s3://images/originals/",),
        s3_endpoint_url=moto.url,
        s3_region="us-east-1",
        cache_backend="s3",
        cache_s3_prefix="s3://cache/head-test/",
    )


def test_a_cached_variant_of_an_s3_source_is_served_without_reading_the_source(
    moto: Child, tmp_path: Path
) -> None:
    app = create_app(s3_server_settings(moto, tmp_path))
    path = "/cdn-cgi/image/width=96/s3://images/originals/astronaut.jpg"
    before = source_gets(moto, "originals/astronaut.jpg")
    miss, hit = asyncio.run(get_twice(app, path))
    assert miss.status_code == hit.status_code == 200
    assert (miss.headers["focal-cache"], hit.headers["focal-cache"]) == ("miss", "hit")
    assert hit.content == miss.content and hit.headers["etag"] == miss.headers["etag"]
    time.sleep(0.2)  # moto's log line is written after the answer
    assert source_gets(moto, "originals/astronaut.jpg") - before == 1  # the miss's fetch only


def test_a_variant_cache_outage_with_head_identities_is_served_as_misses(
    moto: Child, tmp_path: Path
) -> None:
    app = create_app(s3_server_settings(moto, tmp_path))
    dead = stores(f"http://127.0.0.1:{free_port()}", timeout=0.3)
    cache = S3VariantCache("s3://cache/head-test/", dead, Breaker("variant", pause_s=600))
    service = app.state.service  # the store alone (the memory tier would answer the repeat)
    service.variants = Variants(cache, None, service.metrics, "s3")
    path = "/cdn-cgi/image/width=80/s3://images/originals/astronaut.jpg"
    first, second = asyncio.run(get_twice(app, path))
    for response in (first, second):
        assert response.status_code == 200 and response.headers["focal-cache"] == "miss"
        image = pyvips.Image.new_from_buffer(response.content, "")
        assert image.width == 80
    assert cache.breaker.errors == 1 and cache.breaker.skipped >= 1
