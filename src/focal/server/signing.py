"""Signed URLs: HMAC-SHA256 over the path, passed as ``?sig=<urlsafe base64, no padding>``.

The signed text is the request path exactly as sent, percent-encoding included, without the query
string: ``/cdn-cgi/image/<options>/<source>``. Several keys may be configured; a signature made
with any of them is accepted, so keys can be rotated without breaking published URLs. Keys are
used as their UTF-8 bytes. See docs/signing.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import parse_qs

from focal.errors import SignatureError

PARAM = "sig"


def sign_bytes(path: bytes, key: str) -> str:
    digest = hmac.new(key.encode("utf-8"), path, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(path: str, key: str) -> str:
    return sign_bytes(path.encode("utf-8"), key)


def signed_url(path: str, key: str) -> str:
    return f"{path}?{PARAM}={sign(path, key)}"


def signature_from_query(query: str) -> str | None:
    """The ``sig`` parameter, or None. Several ``sig`` parameters are refused."""
    values = parse_qs(query, keep_blank_values=True).get(PARAM, [])
    if len(values) > 1:
        raise SignatureError("A URL may carry one signature (sig) but this one has several")
    return values[0] if values else None


def is_valid(path: bytes, signature: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison against the signature of every key."""
    given = signature.encode("ascii", "replace")
    ok = False
    for key in keys:
        expected = sign_bytes(path, key).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    return ok


def check(path: bytes, query: str, keys: Sequence[str], *, required: bool) -> None:
    """Raise :class:`SignatureError` unless the request is acceptable under the key set."""
    if not keys:
        return
    signature = signature_from_query(query)
    if signature is None:
        if required:
            raise SignatureError(
                "This server only serves signed URLs: the sig parameter is missing"
            )
        return
    if not is_valid(path, signature, keys):
        raise SignatureError("The URL signature (sig) does not match the path")
