"""The HTTP front (focal.server.front) against a real ``focal serve``: connections that never
finish their request head are closed, heads past the limits are refused with 414 / 431, the
connection limit answers 503, and 1,100 idle sockets under a soft open-file limit of 1,024 leave
/healthz answering."""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.live import Live, serve

from focal.errors import SettingsError
from focal.server import front
from focal.server.settings import Settings

HEADER_TIMEOUT_S = 2


def limited_focal(soft: int) -> list[str]:
    """``python -m focal`` started with a soft open-file limit of ``soft`` (systemd's default
    is 1024) and a hard one of 524,288 where it may be raised that far (else the current one)."""
    code = (
        "import resource, runpy, sys\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "try:\n"
        f"    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, 524288))\n"
        "except (ValueError, OSError):\n"
        f"    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, hard))\n"
        "sys.argv = ['focal', *sys.argv[1:]]\n"
        "runpy.run_module('focal', run_name='__main__')\n"
    )
    return [sys.executable, "-c", code]


def closed_by_server(sock: socket.socket, timeout: float = 60) -> bool:
    """True when the server closes ``sock`` (end of file or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def metric(live: Live, reason: str) -> float:
    text = httpx.get(live.url("/metrics"), timeout=30).text
    name = f'focal_http_connections_closed_total{{reason="{reason}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def raw_request(live: Live, head: bytes) -> bytes:
    """Send ``head`` on a fresh connection; what the server answered before closing."""
    port = int(live.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def connect(live: Live) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(live.base.rsplit(":", 1)[1])), timeout=30)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-worker", "two-workers"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("front")
    args = ["--no-face", "--no-cache-enabled", "--log-level", "debug"]
    args += ["--header-timeout-s", str(HEADER_TIMEOUT_S), "--workers", str(request.param)]
    live = serve(folder, args)
    yield live
    live.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_silent_connection_is_closed_after_the_header_timeout(server: Live) -> None:
    before = metric(server, "header_timeout")
    with connect(server) as sock:
        assert closed_by_server(sock), "a silent connection was kept open"
    # with two workers /metrics adds the other's counters as last published (every second or
    # so): the worker that answers may not have seen the close yet
    deadline = time.monotonic() + 20
    while (closed := metric(server, "header_timeout")) < before + 1:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert closed >= before + 1
    assert "request head not complete in time" in server.log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_head_sent_a_byte_at_a_time_is_closed(server: Live) -> None:
    # each byte well within any idle timeout; the head as a whole never completes in time
    head = b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: y\r\n" * 100
    with connect(server) as sock:
        sent = 0
        with contextlib.suppress(OSError):
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
        assert sent < len(head), "the whole slow head was taken"
        assert closed_by_server(sock, 10)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_idle_keep_alive_connection_gets_a_new_header_timeout(server: Live) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /hea")  # the next head begins, and never ends
        assert closed_by_server(sock)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("head", "status", "words"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, b"8192 byte limit"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, b"100 header"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431, b"32768 byte limit"),
        # a head that never ends: refused once past the limit, not read on
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 3_000_000, 431, b"32768 byte limit"),
    ],
    ids=["url", "header-count", "header-bytes", "endless-header"],
)
def test_heads_over_the_limits_are_refused(
    server: Live, head: bytes, status: int, words: bytes
) -> None:
    answer = raw_request(server, head)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"connection: close" in answer and words in answer
    assert httpx.get(server.url("/healthz"), timeout=30).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_past_the_connection_limit_a_new_connection_gets_503(tmp_path: Path) -> None:
    live = serve(tmp_path, ["--no-face", "--no-cache-enabled", "--max-connections", "4"])
    try:
        held = [connect(live) for _ in range(4)]
        time.sleep(0.5)  # accepted
        answer = raw_request(live, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"too many open connections" in answer
        for sock in held:
            sock.close()
        time.sleep(0.5)
        assert httpx.get(live.url("/healthz"), timeout=30).status_code == 200
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_1100_idle_sockets_under_a_1024_file_limit_leave_healthz_answering(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1300:
        pytest.skip("this process cannot open 1,100 sockets")
    if hard != resource.RLIM_INFINITY and hard < 1100 + front.FILE_RESERVE + 100:
        pytest.skip(f"a hard open-file limit of {hard} leaves no room to raise the soft one")
    args = ["--no-face", "--no-cache-enabled", "--header-timeout-s", "5"]
    live = serve(tmp_path, args, focal=limited_focal(1024))
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(connect(live))
        statuses = []
        for _ in range(20):  # a fresh connection each time: each needs a descriptor
            try:
                statuses.append(httpx.get(live.url("/healthz"), timeout=5).status_code)
            except httpx.HTTPError as error:
                statuses.append(type(error).__name__)
            time.sleep(0.05)
        assert statuses == [200] * 20
        assert all(closed_by_server(sock) for sock in idle)
        assert metric(live, "header_timeout") >= 1100
        assert "raised from 1024" in live.log.read_text()  # the banner says so
    finally:
        for sock in idle:
            sock.close()
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_with_h11_silent_connections_and_huge_heads_are_refused_too(tmp_path: Path) -> None:
    args = ["--no-face", "--no-cache-enabled", "--http", "h11", "--header-timeout-s", "2"]
    live = serve(tmp_path, args)
    try:
        with connect(live) as sock:
            assert closed_by_server(sock), "a silent connection was kept open"
        answer = raw_request(live, b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 3_000_000)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert httpx.get(live.url("/healthz"), timeout=30).status_code == 200
    finally:
        live.stop()


# ---- pure parts ------------------------------------------------------------------------------


def test_the_connection_limit_sits_below_the_file_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit")
    assert front.connection_limit(10**9) == soft - front.FILE_RESERVE
    assert front.connection_limit(10) == 10


def test_the_front_limits_are_settings_with_safe_defaults() -> None:
    settings = Settings()
    assert settings.header_timeout_s == 10.0 and settings.keep_alive_timeout_s == 5.0
    assert settings.max_header_bytes == 32768 and settings.max_headers == 100
    assert settings.max_url_bytes == 8192 and settings.max_connections == 4096
    assert settings.remote_total_timeout_s < settings.request_timeout_s


@pytest.mark.parametrize("name", ["header_timeout_s", "max_connections", "max_header_bytes"])
def test_a_front_limit_of_zero_is_a_settings_error(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings(**{name: 0})
