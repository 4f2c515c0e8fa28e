"""Helpers of the browser tests: a real ``focal serve`` on 127.0.0.1, Debian's Chromium.

Never ``playwright install``: the browser is /usr/bin/chromium (apt package ``chromium``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "focal" / "demo"
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Server:
    base: str
    log: Path
    health: dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(base: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"focal serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            response = httpx.get(f"{base}/healthz", timeout=2)
            if response.status_code == 200:
                health: dict[str, Any] = response.json()
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"focal serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def environment_note() -> str:
    return f"FOCAL_MODEL_DIR={os.environ.get('FOCAL_MODEL_DIR', '(unset: ~/.cache/focal/models)')}"
