"""Web Bot Auth: a crawler's HTTP Message Signature (RFC 9421, Ed25519), checked against its keys.

A signed crawler request carries ``Signature-Input`` and ``Signature`` (a member tagged
``web-bot-auth``) and, when its keys are published, ``Signature-Agent``: the origin whose
``/.well-known/http-message-signatures-directory`` lists them (a JWKS). ``Signature-Agent`` comes
in two forms, both read here: the older quoted string (``"https://agent.example"``) and the newer
dictionary (``agent1="https://agent.example"``, covered as ``"signature-agent";key="agent1"``).

What a valid signature needs, in order of the checks (each failure a :class:`BotAuthError`
naming what failed): a ``web-bot-auth`` member; ``alg`` absent or ``ed25519``; ``keyid``,
``created`` and ``expires`` present; ``created`` no later than now + skew, ``expires`` no earlier
than now - skew, ``expires - created`` and the age since ``created`` within ``max_age_s`` (a
signature replayed after its window is refused); ``@authority`` covered, ``signature-agent``
covered whenever the header is there, plus any component the caller requires (a price offer);
the key found by its JWK thumbprint (``keyid``) among the keys the operator pinned or, for an
agent the operator listed, in its directory; and the signature itself (the signature base is
built and checked by the ``http-message-signatures`` library); last, a ``nonce`` seen before in a
verified signature of the same key, while that signature's window lasts, is a replay
(:class:`Nonces`, this process's memory: a signature without a nonce, or replayed to another
worker, is not caught).

Key directories are fetched by :class:`KeyDirectory`: only for agents the operator listed,
https only (http only where every address lies in an explicitly allowed network), every address
of the host checked by focal.server.origins' ``refused_addresses`` before any connection, the
connection made to the checked address, the whole fetch bounded in time and bytes, and the keys
kept for the directory's ``Cache-Control: max-age`` within bounds.

Needs the ``crawlers`` extra (``cryptography``, ``http-message-signatures``): :func:`require`
says so clearly when it is missing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import ipaddress
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from focal.errors import SettingsError
from focal.server.origins import IPNetwork, refused_addresses

TAG = "web-bot-auth"
DIRECTORY_PATH = "/.well-known/http-message-signatures-directory"
DIRECTORY_FAILURE_TTL_S = 10.0  # a directory that failed is not asked again for this long
DIRECTORY_MIN_TTL_S = 10.0
DIRECTORY_DEFAULT_TTL_S = 300.0  # a directory that sends no max-age
MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)

Resolver = Callable[[str, int], Awaitable[list[str]]]


class BotAuthError(Exception):
    """A signature that does not verify; the message says which check failed (public)."""


def require() -> None:
    """Raise SettingsError unless the ``crawlers`` extra is installed."""
    try:
        import cryptography  # noqa: F401
        import http_message_signatures  # noqa: F401
        import http_sf  # noqa: F401
    except ImportError as exc:
        raise SettingsError(
            "Crawler signature checks (crawler_rules with verify or charge) need the crawlers "
            f"extra: pip install 'focal-images[crawlers]' ({exc.name} is missing)"
        ) from None


# ---- keys ----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 JWK: its ``keyid``."""
    canonical = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(text.encode("ascii")).digest())


def ed25519_keys(jwks: object) -> dict[str, Any]:
    """The Ed25519 public keys of a JWKS (``{"keys": [...]}``) by thumbprint; other keys are
    skipped. BotAuthError when the document is not a JWKS."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise BotAuthError('the key directory is not a JWKS (expected {"keys": [...]})')
    keys: dict[str, Any] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = jwk.get("x")
        if not isinstance(x, str):
            continue
        try:
            raw = _unb64url(x)
            keys[thumbprint(jwk)] = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            continue
    return keys


# ---- Signature-Agent -----------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """One Signature-Agent: where its keys are (``url``) and how (``directory`` or
    ``jwks_uri``); ``member`` is its dictionary key (None: the quoted-string form)."""

    url: str
    kind: str = "directory"
    member: str | None = None

    @property
    def keys_url(self) -> str:
        if self.kind == "jwks_uri":
            return self.url
        parsed = httpx.URL(self.url)
        return str(parsed.copy_with(path=DIRECTORY_PATH, query=None, fragment=None))


def agent_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased: how agents are compared."""
    parsed = httpx.URL(url)
    default = {"https": 443, "http": 80}.get(parsed.scheme)
    port = "" if parsed.port in (None, default) else f":{parsed.port}"
    return f"{parsed.scheme}://{parsed.host}{port}".lower()


def structured(text: str, kind: str, header: str) -> Any:
    """A structured field (RFC 8941/9651) parsed by http-sf: ``item`` as (value, params),
    ``dictionary`` as {name: (value, params)}; BotAuthError naming the header if malformed."""
    import http_sf

    try:
        return http_sf.parse(text.encode(), tltype=kind)
    except Exception as exc:  # http_sf raises ValueError and friends on malformed fields
        raise BotAuthError(f"the {header} header is malformed: {exc}") from None


def signature_agents(header: str) -> dict[str | None, Agent]:
    """The agents a Signature-Agent header names: ``{None: agent}`` for the quoted-string form,
    ``{member: agent}`` for the dictionary form. BotAuthError for anything else."""
    text = header.strip()
    if text.startswith('"'):
        value, params = structured(text, "item", "Signature-Agent")
        return {None: _agent(value, params, None)}
    parsed = structured(text, "dictionary", "Signature-Agent")
    return {name: _agent(member[0], member[1], name) for name, member in parsed.items()}


def _agent(value: object, params: Mapping[str, object], member: str | None) -> Agent:
    if not isinstance(value, str):
        raise BotAuthError("a Signature-Agent member is not a string (expected a quoted URL)")
    kind = params.get("type", "directory")
    if kind not in ("directory", "jwks_uri"):
        raise BotAuthError(f"Signature-Agent type {kind!r} is not supported")
    return Agent(url=value, kind=str(kind), member=member)


# ---- the signature -------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers of a request: the interface http-message-signatures reads."""

    method: str
    url: str  # absolute, as the client addressed it (scheme, Host header, raw path and query)
    headers: Any  # ``.items()`` of every field line (Starlette's Headers, a list-backed object)


@dataclass(frozen=True)
class Signed:
    """One ``web-bot-auth`` member of Signature-Input, parsed."""

    label: str
    keyid: str
    created: int
    expires: int
    covered: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]  # (name, params) each
    nonce: str | None = None

    def covers(self, name: str, **params: object) -> bool:
        want = tuple(sorted(params.items()))
        return any(n == name and tuple(sorted(p)) == want for n, p in self.covered)

    def agent_member(self) -> tuple[bool, str | None]:
        """(signature-agent covered?, the dictionary key it selects, if any)."""
        for name, params in self.covered:
            if name == "signature-agent":
                key = dict(params).get("key")
                return True, key if isinstance(key, str) else None
        return False, None


def web_bot_auth_member(headers: Any) -> Signed:
    """The ``web-bot-auth`` member of Signature-Input (the first, if several)."""
    lines = [v for k, v in headers.items() if k.lower() == "signature-input"]
    if not lines or not any(v.strip() for v in lines):
        raise BotAuthError("no Signature-Input header (Web Bot Auth signature missing)")
    members = structured(", ".join(lines), "dictionary", "Signature-Input")
    for label, (inner, params) in members.items():
        if isinstance(inner, list) and params.get("tag") == TAG:
            return _signed(label, inner, params)
    raise BotAuthError(f'no Signature-Input member is tagged "{TAG}"')


def _signed(label: str, inner: list[Any], params: Mapping[str, object]) -> Signed:
    alg = params.get("alg", "ed25519")
    if alg != "ed25519":
        raise BotAuthError(f"signature algorithm {alg!r} is not accepted (expected ed25519)")
    keyid, created, expires = params.get("keyid"), params.get("created"), params.get("expires")
    if not isinstance(keyid, str):
        raise BotAuthError("the signature has no keyid")
    if type(created) is not int or type(expires) is not int:
        raise BotAuthError("the signature needs integer created and expires parameters")
    nonce = params.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > MAX_NONCE_CHARS):
        raise BotAuthError(f"the signature's nonce must be a string of at most {MAX_NONCE_CHARS}")
    covered = tuple(
        (str(name), tuple(sorted(dict(item_params).items()))) for name, item_params in inner
    )
    return Signed(label, keyid, created, expires, covered, nonce)


def check_window(signed: Signed, now: float, skew_s: float, max_age_s: float) -> None:
    """created/expires against the clock: not from the future, not expired, not too long."""
    if signed.created > now + skew_s:
        raise BotAuthError("the signature was created in the future (check the signer's clock)")
    if signed.expires < now - skew_s:
        raise BotAuthError("the signature has expired")
    if signed.expires < signed.created:
        raise BotAuthError("the signature expires before it was created")
    if signed.expires - signed.created > max_age_s or now - signed.created > max_age_s + skew_s:
        raise BotAuthError(f"the signature's window is longer than {max_age_s:g} s")


def verify_signature(
    message: SignedRequest, label: str, keyid: str, key: Any, tag: str | None = TAG
) -> None:
    """Check one member's signature over the message with ``key`` (Ed25519), by the library;
    the time checks are the caller's (``check_window``)."""
    from http_message_signatures import HTTPMessageVerifier, algorithms
    from http_message_signatures.resolvers import MappingKeyResolver

    class Verifier(HTTPMessageVerifier):
        def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
            pass  # done by check_window, with the server's skew and clock

    resolver = MappingKeyResolver(public_keys={keyid: key}, private_keys={})
    verifier = Verifier(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    try:
        verifier.verify(
            message, max_age=None, expect_tag=tag, expect_label=label if tag is not None else None
        )
    except Exception as exc:  # InvalidSignature, HTTPMessageSignaturesException, ValueError
        raise BotAuthError(f"the signature does not verify: {exc}") from None


MAX_NONCE_CHARS = 256
MAX_NONCES = 100_000  # about 30 MiB at the longest nonces


@dataclass
class Nonces:
    """The nonces of verified signatures, each kept until its signature's window ends: one seen
    again in that time is a replay. At most ``limit`` are kept (only verified signatures add
    one); past it the one whose window ends first is forgotten."""

    limit: int = MAX_NONCES
    _until: dict[tuple[str, str], float] = field(default_factory=dict)
    _ends: list[tuple[float, tuple[str, str]]] = field(default_factory=list)  # a heap

    def spend(self, keyid: str, nonce: str, until: float, now: float) -> None:
        """Remember ``nonce`` of ``keyid`` until ``until``; BotAuthError if it is known."""
        while self._ends and self._ends[0][0] < now:
            del self._until[heapq.heappop(self._ends)[1]]
        key = (keyid, nonce)
        if key in self._until:
            raise BotAuthError("the signature's nonce was used before (a replayed request)")
        self._until[key] = until
        heapq.heappush(self._ends, (until, key))
        while len(self._until) > self.limit:
            del self._until[heapq.heappop(self._ends)[1]]

    def __len__(self) -> int:
        return len(self._until)


@dataclass(frozen=True)
class Verified:
    keyid: str
    agent: str | None  # the agent's origin, when its key came from its directory


@dataclass
class Authenticator:
    """Verifies crawler signatures: pinned keys first, then listed agents' directories."""

    directory: KeyDirectory
    skew_s: float = 30.0
    max_age_s: float = 3600.0
    clock: Callable[[], float] = time.time
    nonces: Nonces = field(default_factory=Nonces)

    async def verify(
        self,
        message: SignedRequest,
        pinned: Mapping[str, Any],
        agents: Iterable[str],
        required: Sequence[str] = (),
    ) -> Verified:
        signed = web_bot_auth_member(message.headers)
        check_window(signed, self.clock(), self.skew_s, self.max_age_s)
        if not signed.covers("@authority"):
            raise BotAuthError('the signature does not cover "@authority"')
        for name in required:
            if not signed.covers(name):
                raise BotAuthError(f'the signature does not cover "{name}"')
        agent = self._agent(message, signed)
        key, origin = pinned.get(signed.keyid), None
        if key is None and agent is not None:
            origin = agent_origin(agent.url)
            if origin not in {agent_origin(a) for a in agents}:
                raise BotAuthError(f"signature agent {origin[:200]} is not one this crawler uses")
            key = (await self.directory.keys(agent)).get(signed.keyid)
        if key is None:
            raise BotAuthError(f"unknown key {signed.keyid[:64]!r}")
        verify_signature(message, signed.label, signed.keyid, key)
        if signed.nonce is not None:  # verified first: a forged request cannot spend a nonce
            until = signed.expires + self.skew_s
            self.nonces.spend(signed.keyid, signed.nonce, until, self.clock())
        return Verified(keyid=signed.keyid, agent=origin)

    @staticmethod
    def _agent(message: SignedRequest, signed: Signed) -> Agent | None:
        lines = [v for k, v in message.headers.items() if k.lower() == "signature-agent"]
        if not lines:
            return None
        covered, member = signed.agent_member()
        if not covered:
            raise BotAuthError('the signature does not cover "signature-agent"')
        agents = signature_agents(", ".join(lines))
        if member not in agents:
            raise BotAuthError(f"Signature-Agent has no member {member!r}")
        return agents[member]


# ---- key directories -----------------------------------------------------------------------


class DirectoryError(BotAuthError):
    """A key directory that could not be fetched, or was refused before any connection."""


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class _Cached:
    until: float
    keys: dict[str, Any] | None  # None: the fetch failed (kept for DIRECTORY_FAILURE_TTL_S)
    error: str = ""


@dataclass
class KeyDirectory:
    """Agents' keys, fetched on demand and kept for their lifetime (see the module docstring)."""

    networks: Sequence[IPNetwork] = ()
    timeout_s: float = 3.0
    max_bytes: int = 64 * 1024
    max_ttl_s: float = 3600.0
    resolver: Resolver = system_resolver
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    fetches: int = 0  # directory fetches started (connections attempted or refused)

    @classmethod
    def from_strings(cls, networks: Sequence[str], **kwargs: Any) -> KeyDirectory:
        parsed = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        return cls(networks=parsed, **kwargs)

    async def keys(self, agent: Agent) -> dict[str, Any]:
        url = agent.keys_url
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:  # one fetch per directory at a time; the others wait for its result
            cached = self._cache.get(url)
            if cached is None or cached.until <= self.clock():
                cached = await self._refresh(url)
                self._cache[url] = cached
        if cached.keys is None:
            raise DirectoryError(cached.error)
        return cached.keys

    async def _refresh(self, url: str) -> _Cached:
        try:
            with anyio.fail_after(self.timeout_s):
                keys, ttl = await self._fetch(url)
        except TimeoutError:
            return self._failed(f"the key directory took longer than {self.timeout_s:g} s")
        except BotAuthError as exc:
            return self._failed(str(exc))
        return _Cached(until=self.clock() + ttl, keys=keys)

    def _failed(self, error: str) -> _Cached:
        return _Cached(until=self.clock() + DIRECTORY_FAILURE_TTL_S, keys=None, error=error)

    async def _fetch(self, raw: str) -> tuple[dict[str, Any], float]:
        self.fetches += 1
        url = httpx.URL(raw)
        if url.scheme not in ("https", "http") or not url.host or url.userinfo:
            raise DirectoryError("the key directory URL must be https://host/...")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self.resolver(url.host, port)
        except OSError:
            raise DirectoryError(f"could not resolve the key directory's host {url.host}") from None
        if not addresses or refused_addresses(addresses, self.networks):
            raise DirectoryError(f"the key directory's host {url.host} is not allowed")
        if url.scheme == "http" and not self._all_listed(addresses):
            raise DirectoryError("the key directory must be served over https")
        body, cache_control = await self._get(url, addresses[0])
        try:
            document = json.loads(body)
        except ValueError:
            raise DirectoryError("the key directory is not JSON") from None
        return ed25519_keys(document), self._ttl(cache_control)

    def _all_listed(self, addresses: Sequence[str]) -> bool:
        parsed = [ipaddress.ip_address(a) for a in addresses]
        return bool(self.networks) and all(any(a in n for n in self.networks) for a in parsed)

    async def _get(self, url: httpx.URL, address: str) -> tuple[bytes, str]:
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "application/json"}
        headers["Accept-Encoding"] = "identity"
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        timeout = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(
            timeout=timeout, trust_env=False, follow_redirects=False
        ) as client:
            request = client.build_request(
                "GET", url.copy_with(host=address), headers=headers, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:  # its text may name the address: not repeated
                raise DirectoryError(
                    f"could not fetch the key directory ({type(exc).__name__})"
                ) from None
            try:
                if response.status_code != 200:
                    raise DirectoryError(f"the key directory answered {response.status_code}")
                return await self._body(response), response.headers.get("cache-control", "")
            finally:
                await response.aclose()

    async def _body(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise DirectoryError(f"the key directory is over {self.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise DirectoryError(f"the key directory is over {self.max_bytes} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise DirectoryError(
                f"could not read the key directory ({type(exc).__name__})"
            ) from None
        return b"".join(chunks)

    def _ttl(self, cache_control: str) -> float:
        if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
            return DIRECTORY_MIN_TTL_S
        match = MAX_AGE.search(cache_control)
        ttl = float(match.group(1)) if match else DIRECTORY_DEFAULT_TTL_S
        return max(DIRECTORY_MIN_TTL_S, min(ttl, self.max_ttl_s))
