"""Writing files so that a reader never sees a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(
    path: Path, data: bytes, *, temp_prefix: str | None = None, durable: bool = False
) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it to ``path``: a reader
    sees the old file, or the whole new one. The temporary name starts with ``temp_prefix``
    (default ``.NAME.``, so a sweep can recognise leftovers) and ends with ``.part``; on any
    failure it is removed. ``durable`` also flushes the data to disk before the rename (for
    files that must survive a power cut, such as an installed model). The file is made
    readable by all (0644), as an ordinary write would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}." if temp_prefix is None else temp_prefix
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
