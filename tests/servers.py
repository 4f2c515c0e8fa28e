"""Real backing servers on loopback for the scaling tests and benchmarks: moto's S3-compatible
server (``moto[server]``) and Debian's ``redis-server``, each a child process on a free port,
started and stopped by whoever holds it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.live import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
# moto's server signs nothing: any key pair is accepted, but one must be there
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Child:
    """A server process on 127.0.0.1:port, its log in ``log``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _wait_listening(child: Child, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited:\n{child.log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", child.port), 1):
            return
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{child.name} did not start:\n{child.log.read_text(errors='replace')}")


def start_moto(folder: Path) -> Child:
    """moto's standalone S3-compatible server (``moto.server``) in a process of its own."""
    port = free_port()
    log = folder / f"moto-{port}.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV}
        )
    child = Child("moto", port, process, log)
    _wait_listening(child)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the socket opens before the app answers
        with contextlib.suppress(httpx.TransportError):
            httpx.get(child.url + "/moto-api/", timeout=2)
            return child
        time.sleep(0.1)
    return child


def start_redis(folder: Path) -> Child:
    """redis-server with no persistence, on loopback only."""
    port = free_port()
    log = folder / f"redis-{port}.log"
    command = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    child = Child("redis", port, process, log)
    _wait_listening(child)
    return child


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        child.stop()
