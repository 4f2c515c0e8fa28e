"""The detector worker's memory stays bounded under a load of mixed image sizes (the real model).

A memory bound, not a time bound: the load may run as slowly as the machine makes it. The
numbers behind the bound are in docs/detector.md ("The detector worker's memory",
benchmarks/experiments/detector_memory.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
from tests.conftest import FACEDATA

from focal.detection import RGBImage
from focal.face.retinaface import padded_size
from focal.geometry import INFERENCE_CAP as CAP
from focal.server.detection.pool import DetectorPool, PoolSettings
from focal.server.settings import Settings

BOUND_MIB = 400
DISTINCT = 20
ROUNDS = 2


def mixed_sizes(count: int) -> list[tuple[int, int]]:
    """(width, height): half photos at the 1024 cap in either orientation, half smaller; all
    padded to different input shapes."""
    rng = np.random.default_rng(7)
    found: list[tuple[int, int]] = []
    shapes: set[tuple[int, int]] = set()
    while len(found) < count:
        if len(found) % 2 == 0:
            short = int(rng.integers(CAP * 2 // 5, CAP + 1))
            size = (CAP, short) if rng.random() < 0.5 else (short, CAP)
        else:
            size = (int(rng.integers(160, CAP + 1)), int(rng.integers(160, CAP + 1)))
        shape = padded_size(size[1], size[0])
        if shape not in shapes:
            shapes.add(shape)
            found.append(size)
    return found


def photo(index: int, width: int, height: int) -> RGBImage:
    paths = sorted((FACEDATA / "wider_face" / "WIDER_val" / "images").glob("*/*.jpg"))[:8]
    assert paths, f"no WIDER FACE images under {FACEDATA}"
    path = str(paths[index % len(paths)])
    image = pyvips.Image.thumbnail(path, width, height=height, size="force")
    shape = (image.height, image.width, image.bands)
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=shape)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_worker_memory_stays_bounded_under_mixed_sizes() -> None:
    sizes = mixed_sizes(DISTINCT)
    pool = DetectorPool(
        PoolSettings(workers=1, deadline_s=300.0, max_batch=1, rss_limit_mb=1 << 20)
    )
    pool.start()
    rss: list[float] = []
    faces = 0
    try:
        for round_ in range(ROUNDS):
            for k, (width, height) in enumerate(sizes):
                faces += len(pool.detect([photo(k + round_, width, height)])[0])
                rss.append(pool.stats().worker_rss_bytes[0] / (1 << 20))
        assert pool.stats().restarts == 0
    finally:
        pool.stop()
    assert len(rss) == DISTINCT * ROUNDS
    assert faces > 0
    assert max(rss) < BOUND_MIB, f"worker RSS over the load (MiB): {[round(r) for r in rss]}"


def test_the_restart_threshold_sits_above_the_bound() -> None:
    """The default restart threshold leaves the measured working set room, and is below what the
    worker reached before its memory was bounded (about 1.3 GiB)."""
    assert BOUND_MIB < Settings().detector_rss_limit_mb < 1024
