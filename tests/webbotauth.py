"""Web Bot Auth material for the tests: the RFC 9421 Ed25519 test key (Appendix B.1.4), a signer
built on the http-message-signatures library, Cloudflare's web-bot-auth test vectors
(tests/data/webbotauth, Apache-2.0) and small hostile key-directory servers on loopback."""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms
from http_message_signatures.resolvers import MappingKeyResolver
from http_message_signatures.structures import CaseInsensitiveDict

DATA = Path(__file__).resolve().parent / "data" / "webbotauth"
# RFC 9421 Appendix B.1.4, test-key-ed25519 (also the key of Cloudflare's vectors)
TEST_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",
}
TEST_D = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
TEST_KEYID = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"  # its RFC 7638 thumbprint
TEST_JWKS = {"keys": [TEST_JWK]}


def private_key(d: str = TEST_D) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))


def vectors(version: str) -> list[dict[str, Any]]:
    """Cloudflare's Ed25519 vectors: ``v1`` (expired in 2025), ``v2`` (expiring in 2124)."""
    data = json.loads((DATA / "vectors.json").read_text())
    name = f"packages/web-bot-auth/test/test_data/web_bot_auth_architecture_{version}.json"
    return list(data["files"][name])


def vector_headers(vector: dict[str, Any]) -> dict[str, str]:
    headers = {"Signature-Input": vector["signature_input"], "Signature": vector["signature"]}
    if "signature_agent" in vector:
        headers["Signature-Agent"] = vector["signature_agent"]
    return headers


def sign(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    created: float | None = None,
    expires: float | None = None,
    components: Sequence[str] = ("@authority",),
    key: Ed25519PrivateKey | None = None,
    keyid: str = TEST_KEYID,
    tag: str = "web-bot-auth",
    label: str = "sig1",
) -> dict[str, str]:
    """``headers`` plus Signature-Input and Signature over ``components`` of a GET of ``url``."""
    now = time.time()
    created = now if created is None else created
    expires = created + 300 if expires is None else expires
    message = SimpleNamespace(method="GET", url=url, headers=CaseInsensitiveDict(headers or {}))
    resolver = MappingKeyResolver(public_keys={}, private_keys={keyid: key or private_key()})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    signer.sign(
        message,
        key_id=keyid,
        created=datetime.datetime.fromtimestamp(int(created), datetime.UTC),
        expires=datetime.datetime.fromtimestamp(int(expires), datetime.UTC),
        nonce=base64.b64encode(str(now).encode()).decode(),
        label=label,
        tag=tag,
        covered_component_ids=tuple(components),
    )
    return dict(message.headers.items())


# ---- key directories on loopback -------------------------------------------------------------


@dataclass
class Directory:
    """A key-directory server on ``host``:port; ``requests`` counts the requests it answered,
    ``connections`` the connections it accepted."""

    url: str
    requests: int = 0
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def directory(
    mode: str = "good", host: str = "127.0.0.1", body: bytes | None = None
) -> Iterator[Directory]:
    """``good``: the test key's JWKS with max-age=60; ``slow``: headers, then a byte a second;
    ``huge``: a 4 MiB body; ``body``: that body."""
    state = Directory(url="")
    payload = body if body is not None else json.dumps(TEST_JWKS).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def setup(self) -> None:
            state.connections += 1
            super().setup()

        def do_GET(self) -> None:
            state.requests += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/http-message-signatures-directory+json")
            self.send_header("Cache-Control", "max-age=60")
            if mode == "slow":
                self.end_headers()
                for _ in range(30):
                    if state.stop.wait(1):
                        return
                    with contextlib.suppress(OSError):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                return
            data = b'{"keys": [' + b" " * (4 << 20) + b"]}" if mode == "huge" else payload
            if mode != "huge":  # the huge one sends no length: only the byte bound stops it
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def listener(host: str = "127.0.0.2") -> Iterator[tuple[int, list[int]]]:
    """A bare TCP listener on ``host``: (its port, a list that grows by one per connection)."""
    accepted: list[int] = []
    server = socket.socket()
    server.bind((host, 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join(2)
        server.close()
