"""The detector service's wire format (Open Inference Protocol, binary tensors) and focal serve's
client of a service that is not there: no Ray, no model."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.test_server import DEMO

from focal.detection import DetectionFailed, Face
from focal.errors import BusyError, SettingsError
from focal.server import inference_protocol as oip
from focal.server.app import Origins, create_app
from focal.server.origins import LocalOrigin, is_remote
from focal.server.service_client import ServiceDetector
from focal.server.settings import Settings


def image(height: int = 5, width: int = 7) -> np.ndarray:
    rng = np.random.default_rng(height * 31 + width)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_request_carries_raw_pixels_with_their_shape() -> None:
    pixels = image()
    asked = oip.InferRequest(pixels, candidates=True, deadline_ms=1234.5, caller="a:1", id="7")
    headers, body = oip.encode_request(asked)
    length = int(headers[oip.HEADER_LENGTH])
    header = json.loads(body[:length])
    assert header["inputs"][0]["datatype"] == "UINT8" and header["inputs"][0]["shape"] == [5, 7, 3]
    assert body[length:] == pixels.tobytes()  # no JSON numbers, no image codec
    back = oip.decode_request(body, headers[oip.HEADER_LENGTH])
    assert np.array_equal(back.image, pixels) and back.candidates
    assert (back.deadline_ms, back.caller, back.id) == (1234.5, "a:1", "7")


def test_an_answer_keeps_the_detectors_floats() -> None:
    faces = [Face(box=(0.1, 2.000000001, 30.5, 40.25), score=0.9876543210123)]
    weak = [Face(box=(1.0, 2.0, 3.0, 4.0), score=0.06)]
    headers, body = oip.encode_response("1", faces, weak, {"batch_size": 3})
    answer = oip.decode_response(body, headers[oip.HEADER_LENGTH])
    assert answer.faces == faces and answer.candidates == weak
    assert answer.parameters["batch_size"] == 3
    # a client that asked for JSON outputs gets the same values as numbers
    _, text = oip.encode_response("1", faces, None, {}, binary=False)
    assert oip.decode_response(text, None).faces == faces


def test_a_json_request_is_understood() -> None:
    pixels = image(2, 2)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [2, 2, 3],
                "data": pixels.ravel().tolist(),
            }
        ]
    }
    body = json.dumps(header).encode()
    assert np.array_equal(oip.decode_request(body, None).image, pixels)
    assert not oip.wants_binary(body, None)


@pytest.mark.parametrize(
    ("header", "extra", "expected"),
    [
        ({"inputs": "x"}, b"", "must be a list"),
        ({"inputs": [{"name": "image"}]}, b"", "needs a name, a datatype"),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [2, 2, 3],
                        "parameters": {"binary_data_size": 12},
                    }
                ]
            },
            b"\0" * 11,
            "binary_data_size",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [2, 2],
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            b"\0" * 4,
            "shape [height, width, 3]",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [2000, 1, 3],
                        "parameters": {"binary_data_size": 6000},
                    }
                ]
            },
            b"\0" * 6000,
            "sides 1 to 1024",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": [1, 1, 3],
                        "parameters": {"binary_data_size": 12},
                    }
                ]
            },
            b"\0" * 12,
            "UINT8",
        ),
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(
    header: dict[str, object], extra: bytes, expected: str
) -> None:
    head = json.dumps(header).encode()
    with pytest.raises(oip.ProtocolError, match=re.escape(expected)):
        oip.decode_request(head + extra, str(len(head)))
    with pytest.raises(oip.ProtocolError, match="JSON header"):
        oip.decode_request(b"{not json", "9")


@pytest.mark.parametrize(
    "url", ["localhost:8000", "ftp://h:1", "http://", "http://h:port", "http://u@h:1", "http://h?x"]
)
def test_a_malformed_detector_url_stops_the_start_naming_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="detector_url"):
        Settings(detector_url=url)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


def test_a_service_that_is_not_there_fails_detection_at_once() -> None:
    detector = ServiceDetector(f"http://127.0.0.1:{closed_port()}", 5.0, health_interval_s=60)
    states: list[str] = []
    detector._on_state = states.append
    detector.start()
    try:
        assert states and states[-1].startswith("unavailable: the detector service at")
        with pytest.raises(DetectionFailed, match="not reachable"):
            detector.detect([image()])
        assert "focal_detector_service_up 0" in list(detector.metric_lines())
    finally:
        detector.stop()


@pytest.mark.timeout(120)
def test_focal_serve_without_its_service_serves_degraded_face_crops(tmp_path: Path) -> None:
    """detector_url set and nothing there: start-up goes on, gravity=face answers the centre
    crop marked degraded and not cached, /healthz says the service is not reachable."""
    settings = Settings(
        cache_dir=tmp_path / "cache", detector_url=f"http://127.0.0.1:{closed_port()}"
    )
    asyncio.run(degraded_without_service(settings))


async def degraded_without_service(settings: Settings) -> None:
    origin = LocalOrigin(DEMO, settings.max_bytes)
    app = create_app(settings, Origins(local=origin, remote=None, is_remote=is_remote))
    path = "/cdn-cgi/image/width=160,height=100,fit=cover,gravity=face/astronaut.jpg"
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        health = (await client.get("/healthz")).json()
        assert health["face"].startswith("unavailable: the detector service at")
        assert app.state.service.detection.pool is None  # no pool, no model in this process
        for _ in range(2):
            crop = await client.get(path)
            assert crop.status_code == 200 and crop.headers["cache-control"] == "no-store"
            assert "detection failed" in crop.headers["focal-gravity-fallback"]
            assert crop.headers["focal-cache"] == "miss"  # the degraded crop was not kept
        json_path = path.replace("gravity=face", "gravity=face,format=json")
        assert (await client.get(json_path)).json()["degraded"] is True
        metrics = (await client.get("/metrics")).text
        assert 'focal_detector_service_errors_total{reason="unreachable"}' in metrics
        plain = await client.get("/cdn-cgi/image/width=100/astronaut.jpg")
        assert plain.status_code == 200 and "focal-gravity-fallback" not in plain.headers


def test_focal_batch_refuses_a_detector_service_that_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from focal.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes((DEMO / "astronaut.jpg").read_bytes())
    job = [str(src), str(tmp_path / "out"), "--options", "width=50,height=50,gravity=face"]
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["batch", *job, "--detector-url", url]) == 1
    assert f"the detector service at {url} does not answer" in capsys.readouterr().err
    assert main(["batch", *job, "--detector-url", "nope"]) == 2
    assert "--detector-url" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_focal_detector_serve_refuses_bad_settings_and_a_missing_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from focal.cli import main

    monkeypatch.setenv("FOCAL_MODEL_DIR", str(tmp_path / "no-model"))
    assert main(["detector", "serve", "--detector-service-max-replicas", "0"]) == 2
    assert "detector_service_max_replicas" in capsys.readouterr().err
    assert main(["detector", "serve", "--detector-service-max-batch", "0"]) == 2
    assert "detector_service_max_batch" in capsys.readouterr().err
    assert main(["detector", "serve"]) == 3  # before any Ray starts
    assert "focal models fetch" in capsys.readouterr().err


class RefusingService:
    """A detector service of our own on loopback: healthy, a model, and every inference answered
    with ``status`` (503: Serve's answer when its queue is full)."""

    def __init__(self, status: int) -> None:
        outer = self
        self.infers = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == oip.METADATA_PATH:
                    body = json.dumps({"parameters": {"model_id": "refusing", "max_side": 1024}})
                    self.answer(200, body.encode())
                else:
                    self.answer(200, b"success")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.infers += 1
                self.answer(status, b'{"error": "refused"}')

            def answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("status", "error"), [(503, BusyError), (500, DetectionFailed)])
def test_a_full_service_queue_is_busy_and_a_failing_replica_a_failed_detection(
    status: int, error: type[Exception]
) -> None:
    service = RefusingService(status)
    detector = ServiceDetector(service.url, 5.0, health_interval_s=60)
    detector.start()
    try:
        with pytest.raises(error) as raised:
            detector.detect([image()])
        assert service.infers == 2  # one retry, then the answer
        if isinstance(raised.value, BusyError):
            assert raised.value.retry_after >= 1
        lines = list(detector.metric_lines())
        assert f'focal_detector_service_errors_total{{reason="status_{status}"}} 1' in lines
    finally:
        detector.stop()
        service.stop()


@pytest.mark.timeout(120)
def test_focal_serve_answers_503_with_retry_after_while_the_service_is_full(
    tmp_path: Path,
) -> None:
    service = RefusingService(503)
    try:
        settings = Settings(cache_dir=tmp_path / "cache", detector_url=service.url)
        asyncio.run(busy_service(settings))
    finally:
        service.stop()


async def busy_service(settings: Settings) -> None:
    origin = LocalOrigin(DEMO, settings.max_bytes)
    app = create_app(settings, Origins(local=origin, remote=None, is_remote=is_remote))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/healthz")).json()["face"] == "ready"
        for options in ("width=160,height=100,fit=cover,gravity=face", "width=160,redact=faces"):
            busy = await client.get(f"/cdn-cgi/image/{options}/astronaut.jpg")
            assert busy.status_code == 503, options
            assert int(busy.headers["retry-after"]) >= 1
            assert "busy" in busy.json()["error"]
        plain = await client.get("/cdn-cgi/image/width=100/astronaut.jpg")
        assert plain.status_code == 200
