from __future__ import annotations

import asyncio
import functools
import gzip
import ipaddress
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from focal.errors import ForbiddenError, LimitError, NotFoundError, UpstreamError
from focal.server.origins import (
    LocalOrigin,
    RemoteOrigin,
    Source,
    address_refused,
    decode_local_path,
    is_remote,
    refused_addresses,
)

IMAGE = b"\xff\xd8\xff\xe0 not really a jpeg, but bytes all the same"
BIG = 300_000


@functools.cache
def encoded_body(coding: str) -> bytes:
    """A body as an origin would send it with Content-Encoding ``coding``."""
    zeros = b"\0" * 20_000_000
    if coding.replace(" ", "").lower() == "gzip,gzip":
        return gzip.compress(gzip.compress(zeros, 9), 9)
    if coding.lower() == "gzip":
        return gzip.compress(zeros, 9)
    if coding.lower() == "deflate":
        return zlib.compress(zeros, 9)
    return IMAGE  # br, an unknown coding, identity: the bytes themselves


# ---------------------------------------------------------------------------------------------
# A real HTTP server on the loopback interface


@dataclass
class Origin:
    """A test HTTP server: its base URL and the paths it was asked for."""

    host: str
    port: int
    requests: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.origin.requests.append(self.path)
        self.server.origin.hosts.append(self.headers.get("Host", ""))
        url = urlsplit(self.path)
        route = getattr(self, "route_" + url.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
            return
        route(parse_qs(url.query))

    def route_img(self, query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(IMAGE)))
        self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
        self.end_headers()
        self.wfile.write(IMAGE)

    def route_x(self, query: dict[str, list[str]]) -> None:
        self.route_img(query)

    def route_stream(self, query: dict[str, list[str]]) -> None:
        # HTTP/1.0 without Content-Length: the body ends when the connection closes.
        self.send_response(200)
        self.end_headers()
        for _ in range(BIG // 10_000):
            self.wfile.write(b"\0" * 10_000)
        self.close_connection = True

    def route_declared_big(self, query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10 * BIG))
        self.end_headers()
        self.wfile.write(b"\0" * 100)
        self.close_connection = True

    def route_redirect(self, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_loop(self, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Location", "/loop")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_slow(self, query: dict[str, list[str]]) -> None:
        time.sleep(10)
        self.route_img(query)

    def route_broken(self, query: dict[str, list[str]]) -> None:
        self.send_error(500)

    def route_encoded(self, query: dict[str, list[str]]) -> None:
        # a body sent with the Content-Encoding asked for (?coding=), focal having asked for
        # identity: gzip inside gzip inflates to 20 MB from a few kilobytes
        coding = query.get("coding", [""])[0]
        body = encoded_body(coding)
        self.send_response(200)
        if coding:
            self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_drip(self, query: dict[str, list[str]]) -> None:
        # a byte every 0.2 s: each wait under the read timeout, 8 s in all
        self.send_response(200)
        self.send_header("Content-Length", "40")
        self.end_headers()
        try:
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    origin: Origin


def _serve(host: str) -> Iterator[Origin]:
    server = _Server((host, 0), Handler)
    server.origin = Origin(host, server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def origin() -> Iterator[Origin]:
    """A server on 127.0.0.1."""
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_origin() -> Iterator[Origin]:
    """A second server, on 127.0.0.2 (also loopback), for first hops allowed one by one."""
    yield from _serve("127.0.0.2")


def fetch(remote: RemoteOrigin, url: str) -> Source:
    return asyncio.run(remote.fetch(url))


def open_remote(networks: tuple[str, ...] = (), max_bytes: int = 100_000) -> RemoteOrigin:
    return RemoteOrigin(
        ["http://"], max_bytes, connect_timeout=2, read_timeout=0.5, allowed_networks=networks
    )


# ---------------------------------------------------------------------------------------------
# SSRF: refused addresses


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "169.254.169.254", "10.0.0.1", "100.64.0.1", "[::ffff:127.0.0.1]"],
)
def test_urls_resolving_to_internal_addresses_are_refused(origin: Origin, host: str) -> None:
    remote = open_remote()
    with pytest.raises(ForbiddenError) as caught:
        fetch(remote, f"http://{host}:{origin.port}/img")
    assert caught.value.status == 403
    assert origin.requests == []


def test_hostname_resolving_to_loopback_is_refused_without_naming_the_address(
    origin: Origin,
) -> None:
    with pytest.raises(ForbiddenError) as caught:
        fetch(open_remote(), f"http://localhost:{origin.port}/img")
    assert "localhost" in caught.value.public
    assert "127.0.0.1" not in caught.value.public
    assert "127.0.0.1" in caught.value.detail
    assert origin.requests == []


def test_fetch_succeeds_when_loopback_is_an_allowed_network(origin: Origin) -> None:
    source = fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/img")
    assert source.data == IMAGE
    assert source.identity.startswith(f"url:{origin.base}/img:")
    assert source.last_modified == 1445412480.0
    assert origin.requests == ["/img"]


def test_hostname_is_pinned_and_sent_as_host_header(origin: Origin) -> None:
    # localhost is resolved once, checked, and the connection goes to that address with the
    # original Host header.
    source = fetch(open_remote(("127.0.0.0/8",)), f"http://localhost:{origin.port}/img")
    assert source.data == IMAGE
    assert origin.hosts == [f"localhost:{origin.port}"]


def test_redirect_to_loopback_is_refused(origin: Origin, other_origin: Origin) -> None:
    # First hop: 127.0.0.2, allowed explicitly. Its 302 points at 127.0.0.1, which is not.
    target = f"{origin.base}/x"
    remote = open_remote(("127.0.0.2/32",))
    with pytest.raises(ForbiddenError):
        fetch(remote, f"{other_origin.base}/redirect?to={target}")
    assert other_origin.requests == [f"/redirect?to={target}"]
    assert origin.requests == []


def test_same_redirect_is_followed_when_its_target_is_allowed(
    origin: Origin, other_origin: Origin
) -> None:
    target = f"{origin.base}/x"
    remote = open_remote(("127.0.0.1/32", "127.0.0.2/32"))
    source = fetch(remote, f"{other_origin.base}/redirect?to={target}")
    assert source.data == IMAGE
    assert origin.requests == ["/x"]


def test_redirect_outside_the_allowed_prefixes_is_refused(origin: Origin) -> None:
    remote = RemoteOrigin([f"{origin.base}/redirect"], 100_000, allowed_networks=("127.0.0.0/8",))
    with pytest.raises(ForbiddenError):
        fetch(remote, f"{origin.base}/redirect?to=/img")
    assert origin.requests == ["/redirect?to=/img"]


def test_too_many_redirects_is_an_upstream_error(origin: Origin) -> None:
    remote = RemoteOrigin(["http://"], 100_000, max_redirects=2, allowed_networks=("127.0.0.0/8",))
    with pytest.raises(UpstreamError):
        fetch(remote, f"{origin.base}/loop")
    assert origin.requests == ["/loop"] * 3


# ---------------------------------------------------------------------------------------------
# Limits and origin failures


def test_byte_limit_is_enforced_while_streaming(origin: Origin) -> None:
    remote = open_remote(("127.0.0.0/8",), max_bytes=BIG // 2)
    with pytest.raises(LimitError) as caught:
        fetch(remote, f"{origin.base}/stream")
    assert caught.value.status == 413


def test_streamed_body_under_the_limit_is_read_whole(origin: Origin) -> None:
    source = fetch(open_remote(("127.0.0.0/8",), max_bytes=BIG), f"{origin.base}/stream")
    assert len(source.data) == BIG


def test_declared_length_over_the_limit_is_refused(origin: Origin) -> None:
    with pytest.raises(LimitError):
        fetch(open_remote(("127.0.0.0/8",), max_bytes=BIG), f"{origin.base}/declared-big")


def test_origin_404_is_not_found(origin: Origin) -> None:
    with pytest.raises(NotFoundError):
        fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/nothing-here")


def test_origin_500_is_upstream_error(origin: Origin) -> None:
    with pytest.raises(UpstreamError) as caught:
        fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/broken")
    assert caught.value.status == 502


def test_read_timeout_is_upstream_error(origin: Origin) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="timed out"):
        fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/slow")
    assert time.monotonic() - started < 8  # the 0.5 s read timeout, not the 10 s answer


@pytest.mark.parametrize("coding", ["gzip, gzip", "gzip", "GZIP", "deflate", "br", "x-unknown"])
def test_encoded_bodies_are_refused_without_being_decoded(origin: Origin, coding: str) -> None:
    # focal asks for identity; whatever else the origin sends is refused by name, before any
    # inflation (gzip inside gzip here: 20 MB of zeros in a few kilobytes)
    with pytest.raises(UpstreamError) as caught:
        fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/encoded?coding={coding}")
    assert caught.value.status == 502
    assert f"Content-Encoding {coding}" in caught.value.public


@pytest.mark.parametrize("coding", ["identity", "Identity", ""])
def test_identity_bodies_are_read(origin: Origin, coding: str) -> None:
    source = fetch(open_remote(("127.0.0.0/8",)), f"{origin.base}/encoded?coding={coding}")
    assert source.data == IMAGE


@pytest.mark.timeout(30)
def test_a_dripping_origin_is_stopped_by_the_total_deadline(origin: Origin) -> None:
    # a byte every 0.2 s never trips the 0.5 s read timeout; the 1 s total deadline stops it
    remote = RemoteOrigin(
        ["http://"],
        100_000,
        read_timeout=0.5,
        total_timeout=1.0,
        allowed_networks=("127.0.0.0/8",),
    )
    with pytest.raises(UpstreamError) as caught:
        fetch(remote, f"{origin.base}/drip")
    assert "more than 1 s in all" in caught.value.public


def test_connection_refused_is_upstream_error(origin: Origin) -> None:
    port = origin.port
    remote = open_remote(("127.0.0.0/8",))
    with pytest.raises(UpstreamError):
        fetch(remote, f"http://127.0.0.3:{port}/img")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "http://user:pw@example.com/a.jpg",
        "https://images.example.com.evil.net/a.jpg",
        "https://images.example.com:444/a.jpg",
        "https://images.example.com/private/a.jpg",
        "https://images.example.com/public/%2e%2e/private/a.jpg",
        "http://images.example.com/public/a.jpg",
    ],
)
def test_urls_outside_the_prefixes_are_refused_before_any_lookup(url: str) -> None:
    remote = RemoteOrigin(["https://images.example.com/public/"], 1000)
    with pytest.raises(ForbiddenError):
        fetch(remote, url)


# ---------------------------------------------------------------------------------------------
# Address rules (pure)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "224.0.0.1",
        "233.1.1.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not address_refused(ipaddress.ip_address(address))


def test_allowed_networks_make_exceptions_that_cover_embedded_forms() -> None:
    allowed = [ipaddress.ip_network("127.0.0.0/8")]
    assert not address_refused(ipaddress.ip_address("127.0.0.5"), allowed)
    assert not address_refused(ipaddress.ip_address("::ffff:127.0.0.5"), allowed)
    assert address_refused(ipaddress.ip_address("::1"), allowed)
    assert address_refused(ipaddress.ip_address("10.0.0.1"), allowed)


def test_one_refused_address_among_many_refuses_the_host() -> None:
    assert refused_addresses(["93.184.216.34", "10.0.0.1", "2606:4700::1"]) == ["10.0.0.1"]
    assert refused_addresses(["93.184.216.34", "2606:4700::1"]) == []


def test_is_remote() -> None:
    assert is_remote("http://a/b.jpg")
    assert is_remote("HTTPS://a/b.jpg")
    assert not is_remote("photos/http://a.jpg")
    assert not is_remote("ftp://a/b.jpg")


# ---------------------------------------------------------------------------------------------
# Local files


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "photos").mkdir(parents=True)
    (base / "photos" / "cat.jpg").write_bytes(IMAGE)
    (base / "photos" / "a b.jpg").write_bytes(IMAGE)
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    return base


def local_fetch(root: Path, path: str, max_bytes: int = 10_000) -> Source:
    return asyncio.run(LocalOrigin(root, max_bytes).fetch(path))


def test_local_file_is_read_with_identity_and_mtime(root: Path) -> None:
    source = local_fetch(root, "photos/cat.jpg")
    info = (root / "photos" / "cat.jpg").stat()
    assert source.data == IMAGE
    assert source.identity == f"file:photos/cat.jpg:{info.st_mtime_ns}:{len(IMAGE)}"
    assert source.last_modified == info.st_mtime


def test_local_identity_changes_with_content(root: Path) -> None:
    first = local_fetch(root, "photos/cat.jpg")
    path = root / "photos" / "cat.jpg"
    path.write_bytes(IMAGE + b"more")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert local_fetch(root, "photos/cat.jpg").identity != first.identity


def test_percent_encoded_names_are_decoded_once(root: Path) -> None:
    assert local_fetch(root, "photos/a%20b.jpg").data == IMAGE


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "photos/../../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E/secret.txt",
        ".%2e/secret.txt",
        "..%2fsecret.txt",
        "photos%2f..%2f..%2fsecret.txt",
        "..%5csecret.txt",
        "..\\secret.txt",
        "/etc/passwd",
        "%2fetc/passwd",
        "photos/cat.jpg\x00.png",
        "photos/cat.jpg%00.png",
        "./photos/cat.jpg",
    ],
)
def test_traversal_attempts_are_refused(root: Path, path: str) -> None:
    with pytest.raises(ForbiddenError):
        local_fetch(root, path)


def test_symlink_pointing_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "photos" / "escape.jpg").symlink_to(tmp_path / "secret.txt")
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(ForbiddenError):
        local_fetch(root, "photos/escape.jpg")
    with pytest.raises(ForbiddenError):
        local_fetch(root, "out/secret.txt")


def test_a_link_out_is_403_whether_or_not_its_target_exists(root: Path, tmp_path: Path) -> None:
    (root / "gone.jpg").symlink_to(tmp_path / "no-such-file.jpg")
    (root / "away").symlink_to(tmp_path / "no-such-folder")
    for path in ("gone.jpg", "away/x.jpg"):
        with pytest.raises(ForbiddenError):
            local_fetch(root, path)


def test_symlink_inside_the_root_is_followed(root: Path) -> None:
    (root / "alias.jpg").symlink_to(root / "photos" / "cat.jpg")
    assert local_fetch(root, "alias.jpg").identity.startswith("file:photos/cat.jpg:")


def test_double_encoding_stays_a_literal_name(root: Path) -> None:
    with pytest.raises(NotFoundError):
        local_fetch(root, "%252e%252e/secret.txt")


@pytest.mark.parametrize("path", ["photos/missing.jpg", "photos", "photos/", ""])
def test_missing_or_not_a_file_is_not_found(root: Path, path: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        local_fetch(root, path)
    assert caught.value.status == 404


def test_file_over_the_limit_is_refused(root: Path) -> None:
    with pytest.raises(LimitError) as caught:
        local_fetch(root, "photos/cat.jpg", max_bytes=len(IMAGE) - 1)
    assert caught.value.status == 413


def test_fifo_is_not_found_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(NotFoundError):
        local_fetch(root, "pipe")


def test_decoded_path_is_relative() -> None:
    assert decode_local_path("photos/a%20b.jpg") == "photos/a b.jpg"
    assert decode_local_path("photos/%25.jpg") == "photos/%.jpg"
