"""Real backing servers on loopback for the scaling tests and benchmarks: moto's S3-compatible
server (``moto[server]``) and Debian's ``redis-server``, each a child process on a free port,
started and stopped by whoever holds it."""

from __future__ import annotations

import contextlib
import os
import random
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


def fixed_port() -> int:
    """A free loopback port below the kernel's ephemeral range: one the processes a local Ray
    starts (which bind port 0 for their own servers) never take before the service binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def start_detector_service(
    folder: Path, port: int | None = None, args: tuple[str, ...] = (), timeout: float = 300
) -> Child:
    """``focal detector serve`` (a local Ray and Ray Serve, the service extra) on a loopback
    port, waited for until a replica answers the model's metadata; stop() shuts its Ray down."""
    port = port or fixed_port()
    log = folder / f"detector-service-{port}.log"
    command = [sys.executable, "-m", "focal", "detector", "serve"]
    command += ["--detector-service-port", str(port), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FOCAL_", "RAY_"))}
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environ)
    child = Child("detector service", port, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the detector service exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(child.url + "/v2/models/focal-faces", timeout=5).status_code == 200:
                return child
        time.sleep(0.5)
    child.stop()
    raise RuntimeError(f"the detector service did not start:\n{log.read_text(errors='replace')}")
