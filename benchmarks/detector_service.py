"""The shared face detector service (`focal detector serve`) against an instance's own detector
pool, on one machine.

Starts, on 127.0.0.1: the detector service (a local Ray, one replica, `--detector-service-*`
defaults otherwise), one `focal serve` with its own pool (one detector process) and one with
`detector_url` pointing at the service; both with the variant cache and the detection cache off,
so that every request detects. Then:

1. wire formats: CPU to encode and decode one capped inference image (1024 on its long side) as
   the service's request (raw uint8 with its shape, Open Inference Protocol binary tensor), as
   lossless PNG (libvips, compression 1 and 6), and as a JSON array of numbers;
2. the service's overhead per detection: the same capped images detected in this process
   (`open_detector`, the replica's own detector) and through the service (`ServiceDetector`), one
   at a time, in turn;
3. per face crop on the image host: `--images` distinct WIDER FACE photos (read in place from
   ../shared/facedata), one request at a time, to each instance in turn: latency, and CPU time
   of the image host (the focal serve process and its children: the pool's detector process)
   and of the service's processes (Ray's and Serve's included);
4. the image host's memory with `detector_url` set: VmRSS and VmHWM of the focal serve process
   after a face load of 4 requests at a time.

    .venv/bin/python benchmarks/detector_service.py [--images 30]

Writes benchmarks/results/detector_service.json and prints the tables of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    FACEDATA,
    WORK,
    Server,
    children,
    cpu_seconds,
    focal_server,
    load_manifest,
    median,
    percentile,
    write_result,
)
from tests.servers import fixed_port

from focal.face.detector import load_inference_image
from focal.face.sessions import open_detector
from focal.server import inference_protocol as oip
from focal.server.service_client import ServiceDetector

IMAGE_ROOT = FACEDATA / "wider_face" / "WIDER_val" / "images"
CROP = "/cdn-cgi/image/width=300,height=300,fit=cover,gravity=face/"


def photos(count: int) -> list[str]:
    """Relative paths (under IMAGE_ROOT) of ``count`` WIDER FACE photos with faces."""
    manifest = load_manifest()
    prefix = "wider_face/WIDER_val/images/"
    paths = [m["path"][len(prefix) :] for m in manifest if m["path"].startswith(prefix)]
    return sorted(p for p in paths if p.endswith(".jpg"))[:count]


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *children(pid)])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# -- 1. wire formats ----------------------------------------------------------------------------


def timed_ms(call: Callable[[], object], repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        times.append((time.process_time() - start) * 1000)
    return median(times)


def wire_formats(image: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    request = oip.InferRequest(image, caller="bench")
    headers, body = oip.encode_request(request)
    rows.append(
        {
            "format": "raw uint8 + shape (Open Inference Protocol binary tensor)",
            "bytes": len(body),
            "encode_ms": timed_ms(lambda: oip.encode_request(request)),
            "decode_ms": timed_ms(lambda: oip.decode_request(body, headers[oip.HEADER_LENGTH])),
        }
    )
    vips = pyvips.Image.new_from_array(image)  # uint8, 3 bands
    for level in (1, 6):
        png = bytes(vips.pngsave_buffer(compression=level))

        def decode(data: bytes = png) -> np.ndarray:
            return np.asarray(pyvips.Image.new_from_buffer(data, "").numpy())

        assert np.array_equal(decode(), image)  # lossless
        rows.append(
            {
                "format": f"PNG, lossless (libvips, compression {level})",
                "bytes": len(png),
                "encode_ms": timed_ms(lambda level=level: vips.pngsave_buffer(compression=level)),
                "decode_ms": timed_ms(decode),
            }
        )
    text = json.dumps(image.tolist())
    rows.append(
        {
            "format": "JSON array of numbers",
            "bytes": len(text),
            "encode_ms": timed_ms(lambda: json.dumps(image.tolist()), 3),
            "decode_ms": timed_ms(lambda: np.asarray(json.loads(text), dtype=np.uint8), 3),
        }
    )
    return rows


# -- 2. overhead per detection ------------------------------------------------------------------


def overhead(url: str, images: list[np.ndarray]) -> dict[str, Any]:
    direct = open_detector()
    remote = ServiceDetector(url, 60.0)
    remote.start()
    try:
        remote.detect_with_candidates(images[:2])  # warm both
        direct.detect_with_candidates(images[:2])
        here, there = [], []
        for image in images:
            start = time.perf_counter()
            direct.detect_with_candidates([image])
            here.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            remote.detect_with_candidates([image])
            there.append((time.perf_counter() - start) * 1000)
    finally:
        remote.stop()
    differences = [b - a for a, b in zip(here, there, strict=True)]
    return {
        "images": len(images),
        "direct_ms_p50": median(here),
        "service_ms_p50": median(there),
        "overhead_ms_p50": median(differences),
        "overhead_ms_p90": percentile(differences, 90),
    }


# -- 3. and 4. per face crop, memory ------------------------------------------------------------


@contextlib.contextmanager
def service(port: int) -> Iterator[Server]:
    state = WORK / "state" / "detector-service"
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "focal", "detector", "serve", "--detector-service-port"]
    cmd += [str(port), "--detector-service-min-replicas", "1", "--log-level", "warning"]
    server = Server("detector-service", cmd, port, "/-/healthz", state / "service.log")
    server.start(timeout=300)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base + oip.METADATA_PATH, timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


def crops(instance: Server, paths: list[str], service_pid: int | None) -> dict[str, Any]:
    for path in paths[:2]:  # warm: connections, the pool's first batch
        httpx.get(instance.base + CROP + path, timeout=60)
    host_before = tree_cpu(instance.pid)
    service_before = tree_cpu(service_pid) if service_pid else 0.0
    latencies = []
    with httpx.Client(timeout=60) as client:
        for path in paths:
            start = time.perf_counter()
            reply = client.get(instance.base + CROP + path)
            latencies.append((time.perf_counter() - start) * 1000)
            assert reply.status_code == 200, reply.text
            assert reply.headers.get("cache-control") != "no-store", "degraded"
    count = len(paths)
    return {
        "crops": count,
        "latency_ms_p50": median(latencies),
        "latency_ms_p90": percentile(latencies, 90),
        "host_cpu_ms_per_crop": (tree_cpu(instance.pid) - host_before) * 1000 / count,
        "service_cpu_ms_per_crop": (
            (tree_cpu(service_pid) - service_before) * 1000 / count if service_pid else 0.0
        ),
    }


def face_load_memory(instance: Server, paths: list[str]) -> dict[str, Any]:
    def ask(path: str) -> int:
        return httpx.get(
            instance.base + CROP.replace("300,h", "301,h") + path, timeout=60
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ask, paths))
    assert statuses == [200] * len(paths)
    maps = Path(f"/proc/{instance.pid}/maps").read_text()
    return {
        "requests": len(paths),
        "vmrss_mib": status_kib(instance.pid, "VmRSS") / 1024,
        "vmhwm_mib": status_kib(instance.pid, "VmHWM") / 1024,
        "children": len(children(instance.pid)),
        "inference_runtime_loaded": "onnxruntime" in maps or "openvino" in maps,
    }


def idle_cpu_per_s(pid: int, seconds: float = 5.0) -> float:
    before = tree_cpu(pid)
    time.sleep(seconds)
    return (tree_cpu(pid) - before) * 1000 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30)
    args = parser.parse_args()
    paths = photos(args.images)
    arrays = [load_inference_image(IMAGE_ROOT / p)[0] for p in paths]
    result: dict[str, Any] = {"wire_formats": wire_formats(arrays[0])}
    port = fixed_port()
    url = f"http://127.0.0.1:{port}"
    with service(port) as svc:
        result["service_idle_cpu_ms_per_s"] = idle_cpu_per_s(svc.pid)
        result["overhead"] = overhead(url, arrays)
        own = focal_server(IMAGE_ROOT, cache=False, detections=False, tag="own-pool")
        shared = focal_server(
            IMAGE_ROOT,
            cache=False,
            detections=False,
            tag="service-client",
            extra=["--detector-url", url],
        )
        with contextlib.ExitStack() as stack:
            for server in (own, shared):
                server.start()
                stack.callback(server.stop)
            result["own_pool"] = crops(own, paths, None)
            result["service"] = crops(shared, paths, svc.pid)
            result["memory_service_client"] = face_load_memory(shared, paths)
            result["memory_own_pool"] = face_load_memory(own, paths) | {
                "pool_rss_mib": sum(status_kib(p, "VmRSS") for p in children(own.pid)) / 1024
            }
    write_result("detector_service", result, ".venv/bin/python benchmarks/detector_service.py")
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = ["| wire format, one 1024-side image | bytes | encode ms | decode ms |"]
    lines.append("|---|---|---|---|")
    for row in r["wire_formats"]:
        lines.append(
            f"| {row['format']} | {row['bytes']:,} | {row['encode_ms']:.2f} "
            f"| {row['decode_ms']:.2f} |"
        )
    lines += ["", "| per face crop | latency p50 | p90 | image host CPU | service CPU |"]
    lines.append("|---|---|---|---|---|")
    for key, name in (("own_pool", "own detector pool"), ("service", "detector service")):
        row = r[key]
        lines.append(
            f"| {name} | {row['latency_ms_p50']:.0f} ms | {row['latency_ms_p90']:.0f} ms "
            f"| {row['host_cpu_ms_per_crop']:.0f} ms | {row['service_cpu_ms_per_crop']:.0f} ms |"
        )
    o = r["overhead"]
    lines += [
        "",
        f"overhead per detection (p50 of differences, {o['images']} images): "
        f"{o['overhead_ms_p50']:.1f} ms (p90 {o['overhead_ms_p90']:.1f} ms); direct "
        f"{o['direct_ms_p50']:.0f} ms, service {o['service_ms_p50']:.0f} ms",
    ]
    m, p = r["memory_service_client"], r["memory_own_pool"]
    lines.append(
        f"image host with detector_url: VmRSS {m['vmrss_mib']:.0f} MiB, VmHWM "
        f"{m['vmhwm_mib']:.0f} MiB, runtime loaded: {m['inference_runtime_loaded']}; own pool: "
        f"server {p['vmrss_mib']:.0f} MiB + detector process {p['pool_rss_mib']:.0f} MiB; "
        f"service idle CPU {r['service_idle_cpu_ms_per_s']:.0f} ms/s"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
