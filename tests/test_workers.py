"""`focal serve --workers N`: N processes accept on one listening socket, and every accepted
connection has TCP_NODELAY set (a keep-alive client otherwise waits out Nagle's delay).

The server side of a connection is read from the worker itself: pidfd_getfd(2) copies the
worker's socket descriptor into the test, which then asks it for TCP_NODELAY and its peer.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib.util
import os
import socket
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
