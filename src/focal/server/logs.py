"""Structured logs: one JSON object per line.

Every record is written by one ``json.dumps`` call with ``ensure_ascii``, so a newline, a control
character or a line separator inside any value is escaped and cannot start a new line. Text the
requester controls (path, URL, headers, origin error texts) goes only into dedicated fields, each
capped by :func:`capped`; messages are fixed texts chosen by the code.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

LOGGER_NAME = "focal.server"
FIELD_CAP = 512  # characters kept of a requester-controlled value
MESSAGE_CAP = 2000  # characters kept of any message (third-party libraries included)
TRUNCATED = "…[truncated]"

log = logging.getLogger(LOGGER_NAME)


def capped(text: str, limit: int = FIELD_CAP) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def _safe(value: Any) -> Any:
    """Strings capped; mappings and sequences walked; numbers and None kept."""
    if isinstance(value, str):
        return capped(value)
    if isinstance(value, Mapping):
        return {capped(str(k), 64): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value[:32]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return capped(repr(value))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ts, level, logger, msg, then the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": capped(record.getMessage(), MESSAGE_CAP),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                if key not in entry:
                    entry[key] = _safe(value)
        if record.exc_info:
            entry["exception"] = capped(self.formatException(record.exc_info), 8000)
        return json.dumps(entry, ensure_ascii=True, separators=(",", ":"), default=str)


def configure(level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Route every logger (uvicorn's too) through one JSON handler on the root logger."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # libvips reports damaged data once per tile: at warning level, a log line per tile. The
    # response says it once (Focal-Source-Warning); libvips' errors still come through.
    logging.getLogger("pyvips").setLevel(logging.ERROR)
    return handler


def event(message: str, fields: Mapping[str, Any] | None = None, level: int = logging.INFO) -> None:
    """Log a fixed ``message`` with structured ``fields`` (values capped)."""
    log.log(level, message, extra={"fields": dict(fields or {})})


class Throttled:
    """Logs an event at most once per ``every_s`` per key: a fault that every request meets (a
    full disk under a request flood) is one line per interval, saying how many were left out."""

    def __init__(self, every_s: float = 60.0, clock: Any = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def event(
        self, key: str, message: str, fields: Mapping[str, Any], level: int = logging.WARNING
    ) -> bool:
        """Log ``message`` unless ``key`` was logged within ``every_s``; whether it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                self._left_out[key] = self._left_out.get(key, 0) + 1
                return False
            self._last[key] = now
            left_out = self._left_out.pop(key, 0)
        event(message, {**fields, "repeats_left_out": left_out}, level)
        return True


def request_line(fields: Mapping[str, Any], status: int) -> None:
    """The one line logged per request."""
    level = logging.ERROR if status >= 500 else logging.INFO
    log.log(level, "request", extra={"fields": dict(fields)})


def now_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
