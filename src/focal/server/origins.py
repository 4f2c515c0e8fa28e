"""Where source bytes come from: a local folder or allowed remote URLs, both refusing escapes.

LocalOrigin serves files under one root. It receives the raw, still percent-encoded path from the
URL and decodes it exactly once, here. Refused with ForbiddenError (403), before the file system is
touched: NUL bytes, backslashes, encoded separators (%2f, %5c), absolute paths and `.`/`..`
segments, whether written plainly or percent-encoded (%2e%2e). A path that passes is opened, and
refused (403) unless the opened file's real path (the kernel's, from /proc/self/fd; realpath
where there is none) lies under the realpath of the root, which catches symlinks pointing out.
403 discloses nothing about files outside the root: when the open fails, the decision is made
from the path text and the links inside the root alone (realpath does not need the target to
exist). A path inside the root that is missing or not a regular file is NotFoundError (404); a
file over max_bytes is LimitError (413), decided from its size before it is read.

RemoteOrigin fetches http(s) URLs that start with one of the allowed prefixes. Each host is
resolved once (getaddrinfo in a thread) and refused if ANY of its addresses is not public (see
`address_refused`) unless the address lies in allowed_networks; the connection then goes to the
checked address itself (no second lookup), with the Host header and TLS server name of the URL.
Redirects are followed by hand, each target checked again (prefix and addresses). The body is
read raw, as it came over the wire, and cut off past max_bytes: focal asks for
`Accept-Encoding: identity`, and a body the origin sends with any other Content-Encoding (gzip,
deflate, br, gzip inside gzip, an unknown coding) is refused (502) before a byte of it is read,
so no decompression bomb is ever inflated. The whole fetch, redirects and body included, ends
after total_timeout seconds (502), however regularly the origin sends its bytes. A failed fetch
drops what it had read and gives the memory back (focal.server.memory), as does a fetch of
TRIM_AFTER_BYTES or more once its pieces are joined. Public error messages
never name resolved addresses.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import os
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote

import httpx

from focal.errors import ForbiddenError, LimitError, NotFoundError, UpstreamError
from focal.server import memory

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 1 << 16
TRIM_AFTER_BYTES = 8 << 20  # a remote body this large: trim once its chunks are joined


@dataclass(frozen=True)
class Source:
    """The bytes of one source, an identity that changes with its content, and its mtime."""

    data: bytes
    identity: str
    last_modified: float | None


@dataclass(frozen=True)
class SourceInfo:
    """What a cache lookup needs of a source, known without reading it."""

    identity: str
    last_modified: float | None


def is_remote(source: str) -> bool:
    """True for an absolute http:// or https:// URL."""
    return source.lower().startswith(("http://", "https://"))


class Origin(Protocol):
    """Every origin, one interface (:class:`Defaults` gives what an origin cannot do)."""

    async def fetch(self, source: str) -> Source:
        """The source's bytes and identity (FocalError: refused, missing, upstream down)."""
        ...

    async def identify(self, source: str) -> SourceInfo | None:
        """Its identity from metadata alone, so a cached variant is answered without reading
        the source; None when only reading it tells."""
        ...

    def identify_now(self, source: str) -> SourceInfo | None:
        """The same, blocking, where that costs no network trip (a local file's open and
        fstat): the server calls it in a thread, with the cache lookup; None elsewhere."""
        ...

    def location(self, source: str) -> str:
        """Where onerror=redirect sends a client (ForbiddenError: nowhere)."""
        ...


class Defaults:
    """What an origin answers for what it cannot do: no identity before the fetch, and no
    redirect."""

    async def identify(self, source: str) -> SourceInfo | None:
        return None

    def identify_now(self, source: str) -> SourceInfo | None:
        return None

    def location(self, source: str) -> str:
        raise ForbiddenError("this origin gives no redirect target")


@dataclass(frozen=True)
class Origins:
    local: Origin
    remote: Origin | None
    is_remote: Callable[[str], bool]

    def of(self, source: str) -> Origin | None:
        """The origin that serves ``source`` (None: a remote source, and none enabled)."""
        return self.remote if self.is_remote(source) else self.local


# ---------------------------------------------------------------------------------------------
# Local files


class LocalOrigin(Defaults):
    """Files under `root`; see the module docstring for what is refused and with which status."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self._root = os.path.realpath(root)
        self._max_bytes = max_bytes

    async def fetch(self, path: str) -> Source:
        # realpath walks the file system (a slow disk, a network mount): not on the event loop
        return await asyncio.to_thread(self._read, path)

    def location(self, path: str) -> str:
        """Where onerror=redirect sends a client for this source: the normalised path on this
        host, percent-encoded; ForbiddenError for any path fetch would refuse."""
        self._resolve(path)
        return "/" + quote(decode_local_path(path), safe="/!$&'()*+,;=:@-._~")

    def identify_now(self, path: str) -> SourceInfo:
        """The source's identity from its metadata alone (same checks as fetch, no read: an open
        and an fstat), blocking, for a caller in a thread: a cached variant can then be answered
        without reading the source."""
        fd, info, full = self._open(path)
        os.close(fd)
        return self._info(full, info, info.st_size)

    async def identify(self, path: str) -> SourceInfo | None:
        return await asyncio.to_thread(self.identify_now, path)

    def _resolve(self, path: str) -> str:
        relative = decode_local_path(path)
        full = os.path.realpath(os.path.join(self._root, relative))
        if os.path.commonpath([self._root, full]) != self._root:
            raise ForbiddenError(f"source path not allowed: {path}", detail=f"{full} is outside")
        return full

    def _open(self, requested: str) -> tuple[int, os.stat_result, str]:
        """An open descriptor of a regular file under the root within the size limit, its stat,
        and its real path. The file is opened first and the check made on what was opened (its
        real path as the kernel reports it, /proc/self/fd): one open and one readlink, where
        realpath costs an lstat per path component, and nothing can change between check and
        open. A failed open is decided by realpath as before, so a link that leads out is 403
        whether or not its target exists."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        joined = os.path.join(self._root, decode_local_path(requested))
        try:
            fd = os.open(joined, flags)
        except OSError as exc:
            self._resolve(requested)  # ForbiddenError for a path that leads out
            raise _open_error(requested, exc) from exc
        try:
            full = _opened_path(fd) or os.path.realpath(joined)
            if os.path.commonpath([self._root, full]) != self._root:
                raise ForbiddenError(
                    f"source path not allowed: {requested}", detail=f"{full} is outside"
                )
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotFoundError(f"source not found: {requested}")
            self._check_size(requested, info.st_size)
        except BaseException:
            os.close(fd)
            raise
        return fd, info, full

    def _info(self, full: str, info: os.stat_result, size: int) -> SourceInfo:
        relpath = os.path.relpath(full, self._root)
        identity = f"file:{relpath}:{info.st_mtime_ns}:{size}"
        return SourceInfo(identity=identity, last_modified=info.st_mtime)

    def _read(self, requested: str) -> Source:
        fd, info, full = self._open(requested)
        try:
            data = _read_at_most(fd, self._max_bytes + 1)
        finally:
            os.close(fd)
        self._check_size(requested, len(data))
        known = self._info(full, info, len(data))
        return Source(data=data, identity=known.identity, last_modified=known.last_modified)

    def _check_size(self, requested: str, size: int) -> None:
        if size > self._max_bytes:
            raise LimitError(f"source is over the {self._max_bytes} byte limit: {requested}")


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(READ_CHUNK * 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def decode_local_path(raw: str) -> str:
    """Decode a raw URL path (once) into a relative path, refusing every escape attempt."""
    lowered = raw.lower()
    if "\x00" in raw or "\\" in raw or any(e in lowered for e in ("%00", "%2f", "%5c")):
        raise ForbiddenError(f"source path not allowed: {raw!r}")
    try:
        decoded = unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise ForbiddenError(f"source path not allowed: {raw!r}") from exc
    if decoded.startswith("/"):
        raise ForbiddenError(f"source path not allowed: {raw!r}", detail="absolute path")
    segments = decoded.split("/")
    if any(s in (".", "..") for s in segments):
        raise ForbiddenError(f"source path not allowed: {raw!r}", detail="dot segment")
    if not decoded.strip("/"):
        raise NotFoundError("source not found: empty path")
    return decoded


def _opened_path(fd: int) -> str | None:
    """The real path of an open file as the kernel has it (Linux /proc), or None."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path if path.startswith("/") and not path.endswith(" (deleted)") else None


def _open_error(requested: str, exc: OSError) -> Exception:
    if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
        return ForbiddenError(f"source path not allowed: {requested}", detail=str(exc))
    return NotFoundError(f"source not found: {requested}", detail=str(exc))


# ---------------------------------------------------------------------------------------------
# Address checks

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


def address_refused(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """True unless the address is public, or lies in one of the allowed networks.

    Not public: loopback, link-local (cloud metadata 169.254.169.254, fd00:ec2::254), private
    (10/8, 172.16/12, 192.168/16, fc00::/7), CGNAT 100.64/10, multicast, unspecified, reserved,
    documentation and benchmarking ranges. An IPv6 address that carries an IPv4 one
    (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96) is judged by the IPv4 address it carries;
    6to4 and Teredo addresses are refused when their IPv4 address is.
    """
    if any(address in network for network in allowed):
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return not _public_ipv4(address)
    carried = _carried_ipv4(address)
    if carried is not None:
        return address_refused(carried, allowed)
    tunnelled = _tunnelled_ipv4(address)
    if any(address_refused(v4, allowed) for v4 in tunnelled):
        return True
    return not _public_ipv6(address)


def refused_addresses(addresses: Sequence[str], allowed: Sequence[IPNetwork] = ()) -> list[str]:
    """The addresses among those given that `address_refused` refuses."""
    return [a for a in addresses if address_refused(ipaddress.ip_address(a), allowed)]


def _public_ipv4(address: ipaddress.IPv4Address) -> bool:
    special = address.is_multicast or address.is_reserved or address.is_unspecified
    return address.is_global and not special and address not in _CGNAT


def _public_ipv6(address: ipaddress.IPv6Address) -> bool:
    special = address.is_multicast or address.is_reserved or address.is_site_local
    return address.is_global and not special and address not in _NAT64_LOCAL


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, IPv4-compatible or NAT64 address stands for."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 ends of a 6to4 or Teredo address."""
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


# ---------------------------------------------------------------------------------------------
# Remote URLs


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int | None
    path: str

    def matches(self, url: httpx.URL) -> bool:
        if url.scheme != self.scheme:
            return False
        if self.host and (url.host != self.host or _port(url) != self.port):
            return False
        if self.path in ("", "/") or self.path.endswith("/"):
            return url.path.startswith(self.path)
        return url.path == self.path or url.path.startswith(self.path + "/")


def _port(url: httpx.URL) -> int:
    return url.port if url.port is not None else (443 if url.scheme == "https" else 80)


def _parse_prefix(prefix: str) -> _Prefix:
    url = httpx.URL(prefix)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"remote prefix must start with http:// or https://: {prefix!r}")
    port = _port(url) if url.host else None
    return _Prefix(scheme=url.scheme, host=url.host, port=port, path=url.path)


@dataclass(frozen=True)
class _Body:
    data: bytes
    last_modified: float | None


class RemoteOrigin(Defaults):
    """http(s) sources under allowed prefixes, refusing non-public addresses (SSRF)."""

    def __init__(
        self,
        allowed_prefixes: Sequence[str],
        max_bytes: int,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        max_redirects: int = 3,
        allowed_networks: Sequence[str] = (),
        total_timeout: float = 20,
    ) -> None:
        self._prefixes = tuple(_parse_prefix(p) for p in allowed_prefixes)
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self._max_bytes = max_bytes
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_redirects = max_redirects
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )

    async def fetch(self, url: str) -> Source:
        """The source at ``url``, within total_timeout; on any failure what was read is dropped
        and the heap trimmed."""
        try:
            async with asyncio.timeout(self._total_timeout):
                source = await self._fetch(url)
        except TimeoutError as exc:
            memory.trim_soon()
            host = httpx.URL(url).host
            raise UpstreamError(
                f"the origin took more than {self._total_timeout:g} s in all: {host}",
                detail="remote_total_timeout_s",
            ) from exc
        except BaseException:
            memory.trim_soon()
            raise
        if len(source.data) >= TRIM_AFTER_BYTES:  # the chunks it was joined from are free now
            memory.trim_soon()
        return source

    async def _fetch(self, url: str) -> Source:
        current = self._checked_url(url)
        async with httpx.AsyncClient(
            timeout=self._timeout, trust_env=False, follow_redirects=False
        ) as client:
            for _ in range(self._max_redirects + 1):
                addresses = await self._resolve(current)
                outcome = await self._get(client, current, addresses)
                if isinstance(outcome, _Body):
                    digest = hashlib.sha256(outcome.data).hexdigest()
                    identity = f"url:{url}:{digest}"
                    return Source(outcome.data, identity, outcome.last_modified)
                current = self._checked_url(str(outcome))
        raise UpstreamError(f"origin redirected more than {self._max_redirects} times: {url}")

    def location(self, url: str) -> str:
        """Where onerror=redirect sends a client for this source: the URL as parsed and checked
        exactly as fetch checks it (ForbiddenError otherwise)."""
        return str(self._checked_url(url))

    def _checked_url(self, raw: str) -> httpx.URL:
        try:
            url = httpx.URL(raw)
        except httpx.InvalidURL as exc:
            raise ForbiddenError(f"source URL not allowed: {raw}", detail=str(exc)) from exc
        if url.scheme not in ("http", "https") or not url.host or url.userinfo:
            raise ForbiddenError(f"source URL not allowed: {raw}")
        if ".." in unquote(url.path).split("/") or "\\" in unquote(url.path):
            raise ForbiddenError(f"source URL not allowed: {raw}", detail="dot segment")
        if not any(prefix.matches(url) for prefix in self._prefixes):
            raise ForbiddenError(f"source URL not allowed: {raw}", detail="no prefix matches")
        return url

    async def _resolve(self, url: httpx.URL) -> list[str]:
        """Every address of the host, checked; refused if any one of them is not allowed."""
        loop = asyncio.get_running_loop()
        lookup = loop.getaddrinfo(url.host, _port(url), type=socket.SOCK_STREAM)
        try:
            infos = await asyncio.wait_for(lookup, self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"could not resolve the origin host: {url.host}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refused = refused_addresses(addresses, self._networks)
        if refused or not addresses:
            raise ForbiddenError(
                f"source host not allowed: {url.host}",
                detail=f"{url.host} resolves to refused addresses {refused}",
            )
        return addresses

    async def _get(
        self, client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]
    ) -> _Body | httpx.URL:
        """GET the URL from the first address that accepts a connection."""
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._get_from(client, url, address)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = exc
        raise UpstreamError(
            f"could not connect to the origin: {url.host}", detail=repr(failure)
        ) from failure

    async def _get_from(
        self, client: httpx.AsyncClient, url: httpx.URL, address: str
    ) -> _Body | httpx.URL:
        headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        request = client.build_request(
            "GET", url.copy_with(host=address), headers=headers, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.HTTPError as exc:
            raise _upstream(url, exc) from exc
        try:
            return await self._outcome(url, response)
        finally:
            await response.aclose()

    async def _outcome(self, url: httpx.URL, response: httpx.Response) -> _Body | httpx.URL:
        status = response.status_code
        if status in REDIRECT_STATUSES and "location" in response.headers:
            return url.join(response.headers["location"])
        if status in (404, 410):
            raise NotFoundError(f"source not found at the origin: {url}")
        if status != 200:
            raise UpstreamError(f"the origin answered {status}: {url}")
        coding = encoded_with(response.headers.get_list("content-encoding"))
        if coding:
            raise UpstreamError(
                f"the origin sent the body with Content-Encoding {coding}; focal asks for "
                f"identity and takes no other: {url}"
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise LimitError(f"source is over the {self._max_bytes} byte limit: {url}")
        data = await self._read_body(url, response)
        return _Body(data, _last_modified(response.headers.get("last-modified")))

    async def _read_body(self, url: httpx.URL, response: httpx.Response) -> bytes:
        """The body as received (raw: no content decoding), at most max_bytes of it."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw(READ_CHUNK):
                size += len(chunk)
                if size > self._max_bytes:
                    raise LimitError(f"source is over the {self._max_bytes} byte limit: {url}")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            chunks.clear()
            raise _upstream(url, exc) from exc
        except BaseException:
            chunks.clear()  # the traceback keeps this frame, and so the list, alive
            raise
        return b"".join(chunks)


def encoded_with(values: Sequence[str]) -> str:
    """The content codings of a response (its Content-Encoding values) other than identity,
    comma-separated as sent; empty when the body is sent as it is."""
    codings = [c.strip() for value in values for c in value.split(",")]
    if all(c.lower() in ("", "identity") for c in codings):
        return ""
    return ", ".join(c for c in codings if c)


def _upstream(url: httpx.URL, exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"the origin timed out: {url.host}", detail=repr(exc))
    return UpstreamError(f"the origin failed: {url.host}", detail=repr(exc))


def _last_modified(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
