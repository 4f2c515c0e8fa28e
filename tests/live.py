"""A real ``focal serve`` process on a loopback port, for the tests that talk to one over HTTP."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def serve(
    folder: Path,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    focal: Sequence[str] | None = None,
    cwd: Path | None = None,
) -> Live:
    """Start ``focal serve --port <free> *args`` (``focal``: the command, default this Python's
    ``-m focal``) and wait until /healthz answers; FOCAL_* variables of the caller are dropped."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    command = [*(focal or (sys.executable, "-m", "focal")), "serve", "--port", str(port), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FOCAL_")}
    environ |= dict(env or {})
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=environ, cwd=cwd
        )
    live = Live(f"http://127.0.0.1:{port}", log, process)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(live.url("/healthz"), timeout=1).status_code == 200:
                return live
        except httpx.TransportError:
            time.sleep(0.2)
    live.stop()
    pytest.fail(f"server did not start:\n{log.read_text()}")


@contextlib.contextmanager
def static_origin(folder: Path) -> Iterator[str]:
    """A plain HTTP server on a loopback port serving ``folder`` (a remote origin); its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
