"""The HTTP front: uvicorn's protocols with limits on what one client connection may hold.

uvicorn keeps a connection that never finishes its request for ever (its keep-alive timer is only
armed after a response), and its httptools parser accepts request heads of any size: the URL is
rebuilt by repeated concatenation on the event loop, and headers are kept without a count. The
front closes both, at the cost of a few attribute updates and one timer per request:

- **header timeout** (``header_timeout_s``): from the accept, or from the end of the last
  response, until the request head is complete; past it the connection is closed. A silent socket
  and a head sent a byte at a time are both closed, and counted.
- **idle keep-alive** (``keep_alive_timeout_s``): uvicorn's own timer, closing an idle connection
  between requests.
- **request head** (httptools): at most ``max_url_bytes`` of URL (414), ``max_headers`` header
  fields and ``max_header_bytes`` of request line and headers together (431); the bytes of a head
  still arriving are counted as they come, so the parser never holds more than that plus one read.
  With ``http = h11`` the head is bounded as a whole (max_header_bytes, 431); its URL and header
  count are then h11's to parse.
- **connections** (``max_connections``, per worker process, kept below the open-file limit): past
  it a new connection is answered 503 and closed, instead of waiting for a free descriptor.

Refusals are JSON (``{"error": ...}``, as focal's other errors), sent with ``Connection: close``;
the connection's write side is shut at once and what the client still sends is read and dropped
for at most LINGER_S, so the client receives the answer rather than a reset (at most LINGER_MAX
connections at once linger; past that a refusal closes at once). Every close is
counted by reason in ``/metrics`` (``focal_http_connections_closed_total``) and logged at debug.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import resource
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

from focal.server import logs

LINGER_S = 1.0  # how long a refused connection's input is read and dropped before the close
LINGER_MAX = 128  # refused connections lingering at once; past it a refusal closes at once
FILE_RESERVE = 256  # descriptors kept for everything but client connections (files, pipes)
MAX_FILE_LIMIT = 1 << 20  # when the hard limit is unlimited

REASONS = {
    "header_timeout": "the request head was not complete within header_timeout_s",
    "url_too_long": "URL over max_url_bytes (414)",
    "too_many_headers": "more than max_headers header fields (431)",
    "header_too_large": "request line and headers over max_header_bytes (431)",
    "over_connection_limit": "max_connections already open (503)",
}
CLOSED: Counter[str] = Counter()  # this process's closes, by reason
_lingering = 0  # refused connections still being read and dropped (each holds a descriptor)


@dataclass(frozen=True)
class FrontLimits:
    header_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 5.0
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_url_bytes: int = 8192
    max_connections: int = 4096


# ---- the open-file limit ---------------------------------------------------------------------


def raise_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (each connection holds a descriptor; the
    usual soft default, 1024, is far below what a server needs). (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_FILE_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered so that it sits below this process's open-file limit with
    FILE_RESERVE descriptors to spare (at least 1)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FILE_RESERVE))


# ---- metrics ---------------------------------------------------------------------------------


def metric_lines() -> Iterable[str]:
    name = "focal_http_connections_closed_total"
    yield f"# HELP {name} Client connections the HTTP front closed or refused, by reason."
    yield f"# TYPE {name} counter"
    for reason in REASONS:
        yield f'{name}{{reason="{reason}"}} {CLOSED[reason]}'


# ---- the protocols ---------------------------------------------------------------------------


def _refusal(status: int, phrase: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Front:
    """What both protocols share: the connection limit, the header timer, and refusals. Mixed in
    before a uvicorn protocol class (``limits`` is set on the class made by ``protocol_class``)."""

    limits: ClassVar[FrontLimits]
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None
    _refused = False
    _received_head = 0  # bytes of the current head received so far (httptools)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self.transport = cast(asyncio.Transport, transport)
            message = "The server has too many open connections: try again shortly"
            self._refuse(503, "Service Unavailable", message, "over_connection_limit")
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and not self._refused:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        CLOSED["header_timeout"] += 1
        fields = {"after_s": self.limits.header_timeout_s, "bytes": self._received_head}
        logs.event("connection closed: request head not complete in time", fields, logging.DEBUG)
        self.transport.close()

    def _refuse(self, status: int, phrase: str, message: str, reason: str) -> None:
        """Answer ``status`` and close: the write side at once, the rest after LINGER_S."""
        CLOSED[reason] += 1
        logs.event("connection refused", {"status": status, "reason": reason}, logging.DEBUG)
        self._refused = True
        self._cancel_header_timer()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_refusal(status, phrase, message))
        global _lingering
        if _lingering >= LINGER_MAX or not transport.can_write_eof():
            transport.close()  # a flood of refusals: no descriptor held past the answer
            return
        transport.write_eof()
        _lingering += 1
        self.loop.call_later(LINGER_S, self._linger_over)

    def _linger_over(self) -> None:
        global _lingering
        _lingering -= 1
        self.transport.close()


def _httptools_class() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsFront(_Front, HttpToolsProtocol):
        """uvicorn's httptools protocol with the front's limits (see the module docstring)."""

        _awaiting_head = True
        _url_bytes = 0
        _header_count = 0
        _header_bytes = 0

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # read and dropped until the close
            if self._awaiting_head:
                self._received_head += len(data)
            super().data_received(data)
            if self._awaiting_head and not self._refused and not self.transport.is_closing():
                self._check_head(self._received_head)

        def on_message_begin(self) -> None:
            self._awaiting_head = True
            self._url_bytes = self._header_count = self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._url_bytes += len(url)
            if not self._refused and self._url_bytes <= self.limits.max_url_bytes:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._header_bytes += len(name) + len(value) + 4
            if not self._refused and self._header_count <= self.limits.max_headers:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._awaiting_head = False
            self._received_head = 0
            self._cancel_header_timer()
            if not self._check_head(self._url_bytes + self._header_bytes):
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # idle: the next head's time starts
                self._awaiting_head = True
                self._received_head = 0
                self._arm_header_timer()

        def _check_head(self, head_bytes: int) -> bool:
            """Refuse a head past a limit (True when refused)."""
            limits = self.limits
            large = 431, "Request Header Fields Too Large"
            if self._url_bytes > limits.max_url_bytes:
                message = f"The URL is over the {limits.max_url_bytes} byte limit"
                self._refuse_head(414, "URI Too Long", message, "url_too_long")
            elif self._header_count > limits.max_headers:
                message = f"The request has more than {limits.max_headers} header fields"
                self._refuse_head(*large, message, "too_many_headers")
            elif head_bytes > limits.max_header_bytes:
                message = (
                    "The request line and headers are over the "
                    f"{limits.max_header_bytes} byte limit"
                )
                self._refuse_head(*large, message, "header_too_large")
            return self._refused

        def _refuse_head(self, status: int, phrase: str, message: str, reason: str) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                # a pipelined head while a response is being written: no room for an answer
                CLOSED[reason] += 1
                self._refused = True
                self.transport.close()
                return
            self._refuse(status, phrase, message, reason)

    return HttpToolsFront


class H11Front(_Front, H11Protocol):
    """uvicorn's h11 protocol with the front's connection limit and header timer. A head is
    bounded as a whole (max_header_bytes, counted as it arrives, as with httptools); the URL
    and the header count within it are h11's to parse."""

    def data_received(self, data: bytes) -> None:
        import h11

        if self._refused:
            return
        if self.conn.their_state is h11.IDLE:
            self._received_head += len(data)
            if self._received_head > self.limits.max_header_bytes:
                message = (
                    "The request line and headers are over the "
                    f"{self.limits.max_header_bytes} byte limit"
                )
                self._refuse(431, "Request Header Fields Too Large", message, "header_too_large")
                return
        else:
            self._received_head = 0
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        import h11

        conn = self.conn
        if self.transport.is_closing():
            self._cancel_header_timer()
        elif conn.their_state is h11.IDLE or conn.our_state is h11.DONE:
            self._arm_header_timer()  # waiting for a request head, or past the last answer
        else:
            self._received_head = 0
            self._cancel_header_timer()


def protocol_class(http: str, limits: FrontLimits) -> type[Any]:
    """The front's protocol for the ``http`` setting (auto: httptools when installed), with
    ``limits``."""
    use_httptools = http == "httptools" or (
        http == "auto" and importlib.util.find_spec("httptools") is not None
    )
    base = _httptools_class() if use_httptools else H11Front
    return type(base.__name__, (base,), {"limits": limits})
