"""`focal serve --workers N`: N processes accept on one listening socket, and every accepted
connection has TCP_NODELAY set (a keep-alive client otherwise waits out Nagle's delay); a scrape
of /metrics counts the requests of every worker, whichever answers it.

The server side of a connection is read from the worker itself: pidfd_getfd(2) copies the
worker's socket descriptor into the test, which then asks it for TCP_NODELAY and its peer.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib.util
import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests import images
from tests.live import Live, serve

from focal.commands.serve import listening_socket

SYS_PIDFD_GETFD = 438  # Linux x86-64 and aarch64 alike
MAX_CONNECTIONS = 200


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def copy_descriptor(pid: int, fd: int) -> int | None:
    """Another process's descriptor as one of ours (None where the kernel refuses)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copied = int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    return copied if copied >= 0 else None


def server_side(pid: int, client: tuple[str, int]) -> socket.socket | None:
    """The socket of process ``pid`` whose peer is ``client`` (a copy; the caller closes it)."""
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if not os.readlink(entry).startswith("socket:"):
                continue
            fd = copy_descriptor(pid, int(entry.name))
            if fd is None:
                continue
            sock = socket.socket(fileno=fd)
            try:
                if sock.family == socket.AF_INET and sock.getpeername() == client:
                    return sock
            except OSError:
                pass
            sock.close()
    return None


def loops() -> list[str]:
    """asyncio, and uvloop where it is installed, as focal's install does (it sets TCP_NODELAY)."""
    found = ["asyncio"]
    if importlib.util.find_spec("uvloop") is not None:
        found.append("uvloop")
    return found


def answering(workers: list[int], client: http.client.HTTPConnection) -> int | None:
    """The worker that accepted ``client``'s connection (None: the kernel hides it)."""
    assert client.sock is not None
    here = client.sock.getsockname()
    for pid in workers:
        accepted = server_side(pid, here)
        if accepted is not None:
            accepted.close()
            return pid
    return None


def get(port: int, path: str, workers: list[int]) -> tuple[int | None, str]:
    """GET ``path`` on a connection of its own: (the worker that answered, the body)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        client.request("GET", path)
        reply = client.getresponse()
        body = reply.read()
        assert reply.status == 200, (path, reply.status, body[:200])
        return answering(workers, client), body.decode("latin-1")
    finally:
        client.close()


def counted(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


@pytest.fixture(scope="module", params=loops())
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp(f"workers-{request.param}")
    root = folder / "root"
    root.mkdir()
    (root / "photo.jpg").write_bytes(images.exif_rotated_jpeg())
    args = [
        "--root",
        str(root),
        "--no-face",
        "--no-cache-enabled",
        "--workers",
        "2",
        "--loop",
        request.param,
    ]
    live = serve(folder, [*args, "--log-level", "warning"])
    try:
        yield live
    finally:
        live.stop()


def test_the_listening_socket_is_tcp_so_accepted_sockets_get_nodelay() -> None:
    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.get_inheritable()


@pytest.mark.slow
def test_two_workers_answer_on_one_port_with_nodelay_on_every_connection(
    two_workers: Live,
) -> None:
    workers = children(two_workers.process.pid)
    answered: dict[int, int] = {}
    port = int(two_workers.base.rsplit(":", 1)[1])
    opened: list[http.client.HTTPConnection] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            opened.append(client)
            for _request in range(2):  # keep-alive: the second answer on the same connection
                client.request("GET", "/healthz")
                reply = client.getresponse()
                reply.read()
                assert reply.status == 200
            assert client.sock is not None
            here = client.sock.getsockname()
            owners = []
            for pid in workers:
                accepted = server_side(pid, here)
                if accepted is None:
                    continue
                with accepted:
                    nodelay = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert nodelay, f"worker {pid} accepted a connection without TCP_NODELAY"
                owners.append(pid)
            if not owners:
                pytest.skip("this kernel does not let the test read the workers' sockets")
            assert len(owners) == 1
            answered[owners[0]] = answered.get(owners[0], 0) + 1
            if len(answered) == 2:
                break
    finally:
        for client in opened:
            client.close()
    assert len(answered) == 2, f"only {answered} answered over {len(opened)} connections"
    assert two_workers.process.pid not in answered  # the supervisor itself serves nothing


@pytest.mark.slow
def test_two_workers_serve_images(two_workers: Live) -> None:
    with httpx.Client(base_url=two_workers.base, timeout=30) as client:
        for _ in range(4):
            reply = client.get("/cdn-cgi/image/width=100,format=jpeg/photo.jpg")
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "image/jpeg"


def test_a_loop_or_parser_that_is_not_installed_is_named_with_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from focal.commands import serve as command
    from focal.server.settings import Settings

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert command.missing_extra(Settings(loop="uvloop")) == (
        "loop = uvloop needs uvloop, which is not installed: pip install uvloop"
    )
    assert command.missing_extra(Settings(loop="asyncio", http="h11")) is None


IMAGES_COUNTED = 'focal_stage_seconds_count{stage="total"}'  # image requests only


def http_workers(pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def scrapes_until_each_worker_counts(
    port: int, workers: list[int], expected: int, seconds: float = 60
) -> dict[int, float]:
    """Scrape /metrics until a scrape answered by each of ``workers`` counts ``expected`` image
    requests; what each worker's last scrape counted."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid, text = get(port, "/metrics", workers)
        if pid is None:
            pytest.skip("this kernel does not let the test read the workers' sockets")
        seen[pid] = counted(text, IMAGES_COUNTED)
        if len(seen) == len(workers) and all(v == expected for v in seen.values()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"after {seconds} s the workers' scrapes counted {seen}, not {expected}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_scrape_of_either_worker_counts_every_workers_requests_and_keeps_an_exited_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "photo.jpg").write_bytes(images.exif_rotated_jpeg())
    args = ["--root", str(root), "--no-face", "--no-cache-enabled", "--workers", "2"]
    live = serve(tmp_path, [*args, "--log-level", "warning"])
    try:
        port = int(live.base.rsplit(":", 1)[1])
        workers = http_workers(live.process.pid)
        assert len(workers) == 2, workers
        served: dict[int | None, int] = {}
        for _ in range(MAX_CONNECTIONS):  # until each worker has made at least one image
            pid, _ = get(port, "/cdn-cgi/image/width=100,format=jpeg/photo.jpg", workers)
            if pid is None:
                pytest.skip("this kernel does not let the test read the workers' sockets")
            served[pid] = served.get(pid, 0) + 1
            if len(served) == 2:
                break
        assert len(served) == 2, f"only {served} answered"
        total = sum(served.values())
        scrapes_until_each_worker_counts(port, workers, total)

        # a worker that dies: its successor and the survivor still count what it served
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = http_workers(live.process.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the killed worker was not replaced: {now}")
        scrapes_until_each_worker_counts(port, now, total)
    finally:
        live.stop()


def requests_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("focal_requests_total{")
    )


def burst(port: int, count: int) -> None:
    """``count`` requests, each on a connection of its own (spread over the workers)."""
    for _ in range(count):
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            client.request("GET", "/healthz")
            client.getresponse().read()
        finally:
            client.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_counters_never_go_backwards_across_scrapes_and_a_killed_worker(tmp_path: Path) -> None:
    """Scrapes answered by either worker, between bursts of requests, and a worker killed (SIGKILL)
    just after it answered a scrape: focal_requests_total never goes down from one scrape to the
    next (Prometheus would read a reset)."""
    root = tmp_path / "root"
    root.mkdir()
    args = ["--root", str(root), "--no-face", "--no-cache-enabled", "--workers", "2"]
    live = serve(tmp_path, [*args, "--log-level", "warning"])
    try:
        port = int(live.base.rsplit(":", 1)[1])
        workers = http_workers(live.process.pid)
        assert len(workers) == 2, workers
        totals: list[float] = []
        for _ in range(80):
            burst(port, 3)
            _, text = get(port, "/metrics", workers)
            totals.append(requests_total(text))
        for _ in range(MAX_CONNECTIONS):  # a scrape answered by the first worker, right after
            burst(port, 10)  # requests it has not published on its own yet
            pid, text = get(port, "/metrics", workers)
            if pid is None:
                pytest.skip("this kernel does not let the test read the workers' sockets")
            totals.append(requests_total(text))
            if pid == workers[0]:
                os.kill(pid, signal.SIGKILL)
                break
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and workers[0] in http_workers(live.process.pid):
            time.sleep(0.05)
        for _ in range(40):
            burst(port, 2)
            _, text = get(port, "/metrics", [])
            totals.append(requests_total(text))
        drops = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(totals)) if b < a]
        assert not drops, f"{len(drops)} of {len(totals)} scrapes went backwards: {drops[:5]}"
    finally:
        live.stop()
