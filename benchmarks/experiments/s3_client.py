"""Which S3 client focal uses, by measurement: wall time and client CPU time per fetch of one
200 kB object from a local S3-compatible server (moto's, in a process of its own, so its CPU is
not counted), each client reused across fetches as a server would.

    .venv/bin/python benchmarks/experiments/s3_client.py  # writes benchmarks/results/s3_client.json

Needs the s3 extra's candidates installed: boto3, aiobotocore, obstore, moto[server].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests/

from tests.servers import S3_ENV, start_moto

RESULTS = Path(__file__).resolve().parents[1] / "results" / "s3_client.json"
BUCKET = "bench"
KEY = "originals/photo.jpg"
SIZE = 200 * 1024
WARMUP = 20
FETCHES = 300


def measure_sync(fetch: Callable[[], bytes]) -> dict[str, float]:
    for _ in range(WARMUP):
        fetch()
    walls: list[float] = []
    cpu_start = time.process_time()
    for _ in range(FETCHES):
        start = time.perf_counter()
        assert len(fetch()) == SIZE
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    return summary(walls, cpu)


def measure_async(fetch: Callable[[], Awaitable[bytes]]) -> dict[str, float]:
    async def run() -> dict[str, float]:
        for _ in range(WARMUP):
            await fetch()
        walls: list[float] = []
        cpu_start = time.process_time()
        for _ in range(FETCHES):
            start = time.perf_counter()
            assert len(await fetch()) == SIZE
            walls.append(time.perf_counter() - start)
        return summary(walls, time.process_time() - cpu_start)

    return asyncio.run(run())


def summary(walls: list[float], cpu: float) -> dict[str, float]:
    walls.sort()
    return {
        "wall_ms_p50": round(statistics.median(walls) * 1000, 3),
        "wall_ms_p90": round(walls[int(len(walls) * 0.9)] * 1000, 3),
        "wall_ms_mean": round(statistics.fmean(walls) * 1000, 3),
        "cpu_ms_per_fetch": round(cpu / len(walls) * 1000, 3),
    }


def bench_boto3(endpoint: str) -> dict[str, float]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    return measure_sync(lambda: client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())


def bench_aiobotocore(endpoint: str) -> dict[str, float]:
    from aiobotocore.session import get_session

    async def run() -> dict[str, float]:
        session = get_session()
        async with session.create_client("s3", endpoint_url=endpoint) as client:

            async def fetch() -> bytes:
                response = await client.get_object(Bucket=BUCKET, Key=KEY)
                async with response["Body"] as body:
                    data: bytes = await body.read()
                return data

            for _ in range(WARMUP):
                await fetch()
            walls: list[float] = []
            cpu_start = time.process_time()
            for _ in range(FETCHES):
                start = time.perf_counter()
                assert len(await fetch()) == SIZE
                walls.append(time.perf_counter() - start)
            return summary(walls, time.process_time() - cpu_start)

    return asyncio.run(run())


def obstore_store(endpoint: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def bench_obstore_sync(endpoint: str) -> dict[str, float]:
    import obstore

    store = obstore_store(endpoint)
    return measure_sync(lambda: bytes(obstore.get(store, KEY).bytes()))


def bench_obstore_async(endpoint: str) -> dict[str, float]:
    import obstore

    store = obstore_store(endpoint)

    async def fetch() -> bytes:
        result = await obstore.get_async(store, KEY)
        return bytes(await result.bytes_async())

    return measure_async(fetch)


CLIENTS: dict[str, Callable[[str], dict[str, float]]] = {
    "boto3 (sync, in a thread in the server)": bench_boto3,
    "aiobotocore (asyncio)": bench_aiobotocore,
    "obstore (sync)": bench_obstore_sync,
    "obstore (asyncio)": bench_obstore_async,
}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    os.environ.update(S3_ENV)
    with tempfile.TemporaryDirectory() as folder:
        moto = start_moto(Path(folder))
        try:
            import boto3

            admin = boto3.client("s3", endpoint_url=moto.url)
            admin.create_bucket(Bucket=BUCKET)
            admin.put_object(Bucket=BUCKET, Key=KEY, Body=os.urandom(SIZE))
            results: dict[str, Any] = {}
            for name, bench in CLIENTS.items():
                try:
                    results[name] = bench(moto.url)
                except ImportError as error:
                    results[name] = {"error": f"not installed: {error}"}
                print(f"{name:45s} {results[name]}", flush=True)
        finally:
            moto.stop()
    out = {
        "object_bytes": SIZE,
        "fetches": FETCHES,
        "server": "moto.server (moto[server]) on 127.0.0.1, its own process",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
        "results": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
