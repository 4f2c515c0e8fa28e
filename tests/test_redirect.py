"""onerror=redirect: a redirect target passes exactly the check a fetch passes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from tests.test_server import Server, fresh_server

from focal.server.app import Service, build_service, redirect_target
from focal.server.settings import Settings


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    root = tmp_path_factory.mktemp("redirect-root")
    settings = Settings(
        root=root, remote_prefixes=("https://cdn.example/images/",), cache_enabled=False
    )
    return build_service(settings, None)


@pytest.mark.parametrize(
    "source",
    [
        "https://cdn.example@evil.example/x.jpg",
        "https://cdn.example/images/@evil.example/x.jpg".replace("/images/", "@"),
        "https://cdn.example.evil.example/images/x.jpg",
        "https://cdn.example/images/../../evil/x.jpg",
        "https://cdn.example/images/%2e%2e/%2e%2e/x.jpg",
        "https://cdn.example/imagesx/a.jpg",
        "https://cdn.example:8443/images/a.jpg",
        "http://cdn.example/images/a.jpg",
        "https://user:pw@cdn.example/images/a.jpg",
        "https://cdn.example\\@evil.example/images/a.jpg",
        "https://evil.example/images/a.jpg",
    ],
)
def test_remote_targets_that_fetch_refuses_are_not_redirected_to(
    service: Service, source: str
) -> None:
    assert redirect_target(service, source) is None


def test_an_allowed_remote_source_is_redirected_to_as_parsed(service: Service) -> None:
    target = "https://cdn.example/images/a%20b.jpg"
    assert redirect_target(service, target) == target


@pytest.mark.parametrize(
    "source",
    [
        "\\evil.example/x.jpg",
        "%5cevil.example/x.jpg",
        "/evil.example/x.jpg",
        "//evil.example/x.jpg",
        "../x.jpg",
        "a/../../x.jpg",
        "%2e%2e/x.jpg",
        "a/%2e%2e/%2e%2e/x.jpg",
        "%2fevil.example/x.jpg",
    ],
)
def test_local_sources_that_fetch_refuses_are_not_redirected_to(
    service: Service, source: str
) -> None:
    assert redirect_target(service, source) is None


def test_local_targets_are_normalised_paths_on_this_host(service: Service) -> None:
    assert redirect_target(service, "missing.jpg") == "/missing.jpg"
    assert redirect_target(service, "dir/a%20b.jpg") == "/dir/a%20b.jpg"
    assert redirect_target(service, "dir//x.jpg") == "/dir//x.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from fresh_server(tmp_path_factory, "redirect")


def head_of(port: int, target: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()


@pytest.mark.parametrize("source", ["\\evil.example/x.jpg", "/evil.example/x.jpg", "..%2fx.jpg"])
def test_server_answers_the_error_instead_of_an_offsite_location(
    server: Server, source: str
) -> None:
    head = head_of(server.port, f"/cdn-cgi/image/width=10,onerror=redirect/{source}")
    assert head.startswith("http/1.1 403") and "location:" not in head


def test_server_redirects_a_missing_local_source_to_its_path(server: Server) -> None:
    head = head_of(server.port, "/cdn-cgi/image/width=10,onerror=redirect/no%20such.jpg")
    assert head.startswith("http/1.1 302") and "location: /no%20such.jpg" in head
