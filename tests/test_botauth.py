"""Web Bot Auth verification (focal.server.botauth) against reference vectors: RFC 9421's Ed25519
example (Appendix B.2.6, key B.1.4) and Cloudflare's web-bot-auth vectors; the window, coverage
and key checks; the key directory client's address, size, time and lifetime bounds."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from tests import webbotauth as wba

from focal.server import botauth

VECTOR_TIME = 1735689600 + 60  # a minute after Cloudflare's vectors were made
HOST_URL = "https://example.com/path/to/resource"


class Lines(list[tuple[str, str]]):
    """Header field lines with ``.items()``, as Starlette's Headers give them."""

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self)

    def get(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self if k.lower() == name.lower()), default)


def message(url: str, headers: dict[str, str]) -> botauth.SignedRequest:
    return botauth.SignedRequest("GET", url, Lines(headers.items()))


def pinned() -> dict[str, Any]:
    return botauth.ed25519_keys(wba.TEST_JWKS)


def authenticator(
    clock: float | None = None, max_age_s: float = 3600, **directory: Any
) -> botauth.Authenticator:
    return botauth.Authenticator(
        directory=botauth.KeyDirectory(**directory),
        skew_s=30,
        max_age_s=max_age_s,
        clock=(lambda: clock) if clock is not None else time.time,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_rfc9421_b26_ed25519_example_verifies() -> None:
    headers = {
        "Host": "example.com",
        "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Length": "18",
        "Signature-Input": 'sig-b26=("date" "@method" "@path" "@authority" "content-type" '
        '"content-length");created=1618884473;keyid="test-key-ed25519"',
        "Signature": "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu"
        "4A0w6vuQv5lIp5WPpBKRCw==:",
    }
    request = botauth.SignedRequest("POST", "http://example.com/foo?param=Value&Pet=dog",
                                    Lines(headers.items()))  # fmt: skip
    key = pinned()[wba.TEST_KEYID]
    botauth.verify_signature(request, "sig-b26", "test-key-ed25519", key, tag=None)
    headers["Date"] = "Tue, 20 Apr 2021 02:07:56 GMT"  # one second later: not what was signed
    with pytest.raises(botauth.BotAuthError, match="does not verify"):
        botauth.verify_signature(
            botauth.SignedRequest("POST", "http://example.com/foo", Lines(headers.items())),
            "sig-b26",
            "test-key-ed25519",
            key,
            tag=None,
        )


def test_the_test_keys_thumbprint_is_the_vectors_keyid() -> None:
    assert botauth.thumbprint(wba.TEST_JWK) == wba.TEST_KEYID
    assert all(v["key"]["x"] == wba.TEST_JWK["x"] for v in wba.vectors("v1") + wba.vectors("v2"))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cloudflare_vectors_verify_with_the_pinned_key(version: str) -> None:
    for vector in wba.vectors(version):
        request = message(vector["target_url"], wba.vector_headers(vector))
        verified = run(
            authenticator(VECTOR_TIME, max_age_s=4e9).verify(request, pinned(), agents=())
        )
        assert verified.keyid == wba.TEST_KEYID and verified.agent is None


def test_both_signature_agent_forms_are_read() -> None:
    old, new = wba.vectors("v1")[1], wba.vectors("v2")[1]
    assert botauth.signature_agents(old["signature_agent"]) == {
        None: botauth.Agent("https://signature-agent.test")
    }
    assert botauth.signature_agents(new["signature_agent"]) == {
        "agent2": botauth.Agent("https://signature-agent.test", member="agent2")
    }
    jwks = botauth.signature_agents('a="https://k.example/jwks.json";type=jwks_uri')["a"]
    assert jwks.keys_url == "https://k.example/jwks.json"
    assert botauth.Agent("https://a.example/x").keys_url == (
        "https://a.example/.well-known/http-message-signatures-directory"
    )
    with pytest.raises(botauth.BotAuthError, match="Signature-Agent"):
        botauth.signature_agents("not a structured field ((")


def test_an_expired_vector_is_refused_at_todays_date() -> None:
    vector = wba.vectors("v1")[0]  # expired 2025-01-01T01:00Z
    request = message(vector["target_url"], wba.vector_headers(vector))
    with pytest.raises(botauth.BotAuthError, match="expired"):
        run(authenticator().verify(request, pinned(), agents=()))


def test_a_signature_longer_than_the_window_is_refused() -> None:
    vector = wba.vectors("v2")[0]  # created 2025, expires 2124
    request = message(vector["target_url"], wba.vector_headers(vector))
    with pytest.raises(botauth.BotAuthError, match="window"):
        run(authenticator(VECTOR_TIME).verify(request, pinned(), agents=()))


def test_created_in_the_future_is_refused() -> None:
    now = time.time()
    headers = wba.sign(HOST_URL, created=now + 600, expires=now + 900)
    with pytest.raises(botauth.BotAuthError, match="future"):
        run(authenticator(now).verify(message(HOST_URL, headers), pinned(), agents=()))


def test_a_tampered_request_is_refused() -> None:
    vector = wba.vectors("v2")[0]
    request = message("https://example.org/path/to/resource", wba.vector_headers(vector))
    with pytest.raises(botauth.BotAuthError, match="does not verify"):
        run(authenticator(VECTOR_TIME, max_age_s=4e9).verify(request, pinned(), agents=()))


def test_an_unknown_key_is_refused() -> None:
    other = botauth.ed25519_keys({"keys": [dict(wba.TEST_JWK, x="A" * 43)]})
    headers = wba.sign(HOST_URL)
    with pytest.raises(botauth.BotAuthError, match="unknown key"):
        run(authenticator().verify(message(HOST_URL, headers), other, agents=()))


def test_authority_and_required_components_must_be_covered() -> None:
    headers = wba.sign(HOST_URL, components=("@path",))
    with pytest.raises(botauth.BotAuthError, match="@authority"):
        run(authenticator().verify(message(HOST_URL, headers), pinned(), agents=()))
    offer = {"crawler-max-price": "USD 0.05"}
    headers = wba.sign(HOST_URL, offer)
    with pytest.raises(botauth.BotAuthError, match="crawler-max-price"):
        run(
            authenticator().verify(
                message(HOST_URL, headers), pinned(), (), required=("crawler-max-price",)
            )
        )


def test_an_uncovered_signature_agent_is_refused() -> None:
    headers = wba.sign(HOST_URL, {"Signature-Agent": '"https://agent.example"'})
    with pytest.raises(botauth.BotAuthError, match="signature-agent"):
        run(authenticator().verify(message(HOST_URL, headers), {}, ["https://agent.example"]))


def test_a_signature_without_the_web_bot_auth_tag_is_refused() -> None:
    headers = wba.sign(HOST_URL, tag="other")
    with pytest.raises(botauth.BotAuthError, match="web-bot-auth"):
        run(authenticator().verify(message(HOST_URL, headers), pinned(), agents=()))


def test_an_agent_the_rule_does_not_list_is_not_fetched() -> None:
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.215.14"]

    headers = wba.sign(
        HOST_URL,
        {"Signature-Agent": '"https://evil.example"'},
        components=("@authority", "signature-agent"),
    )
    auth = authenticator(resolver=resolver)
    with pytest.raises(botauth.BotAuthError, match="not one this crawler uses"):
        run(auth.verify(message(HOST_URL, headers), {}, ["https://agent.example"]))
    assert resolved == [] and auth.directory.fetches == 0


# ---- the key directory client ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_name_resolving_to_a_private_address_is_refused_without_connecting() -> None:
    with wba.listener("127.0.0.2") as (port, accepted):

        async def resolver(host: str, _: int) -> list[str]:
            assert host == "keys.example"  # the injected resolver: no system DNS
            return ["127.0.0.2"]

        keys = botauth.KeyDirectory(resolver=resolver)
        agent = botauth.Agent(f"https://keys.example:{port}")
        with pytest.raises(botauth.DirectoryError, match="not allowed"):
            run(keys.keys(agent))
        for address in ("10.0.0.5", "169.254.169.254", "::1", "fd00::1"):

            async def private(host: str, _: int, address: str = address) -> list[str]:
                return [address]

            with pytest.raises(botauth.DirectoryError, match="not allowed"):
                run(botauth.KeyDirectory(resolver=private).keys(agent))
    assert accepted == []


@pytest.mark.timeout(30)
def test_directory_keys_are_kept_for_their_max_age_within_bounds() -> None:
    now = [1000.0]
    with wba.directory() as server:
        keys = botauth.KeyDirectory.from_strings(["127.0.0.1/32"], clock=lambda: now[0])

        async def twice() -> None:
            agent = botauth.Agent(server.url)
            assert wba.TEST_KEYID in await keys.keys(agent)
            now[0] += 59  # max-age=60: still fresh
            await keys.keys(agent)
            assert server.requests == 1
            now[0] += 2
            await keys.keys(agent)
            assert server.requests == 2

        run(twice())
    directory = botauth.KeyDirectory(max_ttl_s=120)
    assert directory._ttl("public, max-age=86400") == 120
    assert directory._ttl("max-age=0") == botauth.DIRECTORY_MIN_TTL_S
    assert botauth.KeyDirectory()._ttl("") == botauth.DIRECTORY_DEFAULT_TTL_S


@pytest.mark.timeout(30)
def test_plain_http_only_inside_an_allowed_network() -> None:
    async def public(host: str, _: int) -> list[str]:
        return ["93.184.215.14"]

    with pytest.raises(botauth.DirectoryError, match="https"):
        run(botauth.KeyDirectory(resolver=public).keys(botauth.Agent("http://keys.example")))


@pytest.mark.timeout(30)
def test_slow_and_huge_directories_fail_within_their_bounds() -> None:
    for mode, reason in (("slow", "longer than"), ("huge", "over 4096 bytes")):
        with wba.directory(mode) as server:
            keys = botauth.KeyDirectory.from_strings(
                ["127.0.0.1/32"], timeout_s=1.0, max_bytes=4096
            )
            with pytest.raises(botauth.DirectoryError, match=reason):
                run(keys.keys(botauth.Agent(server.url)))
            with pytest.raises(botauth.DirectoryError, match=reason):  # remembered, not refetched
                run(keys.keys(botauth.Agent(server.url)))
            assert server.requests == 1


def test_a_directory_that_is_not_a_jwks_is_refused() -> None:
    with pytest.raises(botauth.BotAuthError, match="JWKS"):
        botauth.ed25519_keys(json.loads('{"not": "keys"}'))
    assert botauth.ed25519_keys({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}) == {}


def test_a_replayed_signature_is_refused_and_a_fresh_one_passes() -> None:
    auth = authenticator()
    headers = wba.sign(HOST_URL)
    assert run(auth.verify(message(HOST_URL, headers), pinned(), agents=())).keyid
    with pytest.raises(botauth.BotAuthError, match="replayed"):
        run(auth.verify(message(HOST_URL, headers), pinned(), agents=()))
    fresh = wba.sign(HOST_URL)
    assert fresh["Signature-Input"] != headers["Signature-Input"]  # another nonce
    assert run(auth.verify(message(HOST_URL, fresh), pinned(), agents=())).keyid


def test_a_vector_is_accepted_once_by_one_authenticator() -> None:
    auth = authenticator(VECTOR_TIME, max_age_s=4e9)
    vector = wba.vectors("v1")[0]
    request = message(vector["target_url"], wba.vector_headers(vector))
    run(auth.verify(request, pinned(), agents=()))
    with pytest.raises(botauth.BotAuthError, match="replayed"):
        run(auth.verify(request, pinned(), agents=()))


def test_a_request_that_does_not_verify_spends_no_nonce() -> None:
    auth = authenticator()
    headers = wba.sign(HOST_URL)
    elsewhere = HOST_URL.replace("example.com", "example.org")  # not the signed authority
    with pytest.raises(botauth.BotAuthError, match="does not verify"):
        run(auth.verify(message(elsewhere, headers), pinned(), agents=()))
    assert len(auth.nonces) == 0
    assert run(auth.verify(message(HOST_URL, headers), pinned(), agents=())).keyid


def test_nonces_are_kept_until_their_window_ends_and_within_a_bound() -> None:
    nonces = botauth.Nonces(limit=2)
    nonces.spend("k", "a", until=100, now=0)
    with pytest.raises(botauth.BotAuthError, match="replayed"):
        nonces.spend("k", "a", until=100, now=99)
    nonces.spend("other-key", "a", until=100, now=99)  # a nonce is per key
    nonces.spend("k", "a", until=300, now=101)  # its window had ended: forgotten
    nonces.spend("k", "b", until=200, now=101)
    nonces.spend("k", "c", until=400, now=101)
    assert len(nonces) == 2  # the bound: the one ending first (b) forgotten
    nonces.spend("k", "b", until=500, now=102)
    with pytest.raises(botauth.BotAuthError, match="replayed"):
        nonces.spend("k", "c", until=400, now=102)


def test_a_nonce_that_is_not_a_short_string_is_refused() -> None:
    headers = wba.sign(HOST_URL)
    long_nonce = "n" * (botauth.MAX_NONCE_CHARS + 1)
    headers["Signature-Input"] = re.sub(
        r'nonce="[^"]*"', f'nonce="{long_nonce}"', headers["Signature-Input"]
    )
    with pytest.raises(botauth.BotAuthError, match="nonce must be a string"):
        run(authenticator().verify(message(HOST_URL, headers), pinned(), agents=()))
