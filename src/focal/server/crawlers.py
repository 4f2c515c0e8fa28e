"""Crawler control at the image origin: robots.txt, per-crawler rules, pay per crawl.

Built once at start-up from the settings (:func:`build`); None when no crawler setting is set,
and then the request path makes no crawler work at all (one ``is None`` check).

- **robots.txt** (:func:`robots_text`): an optional managed section first (``Content-Signal``
  in the ``User-agent: *`` group; ``Disallow: /`` for every known AI crawler), then the
  operator's own file as written.
- **Rules** (a TOML file, ``crawler_rules``): ``[[rule]]`` tables tried in order, the first
  whose crawler and request match deciding; no match (a browser, an unlisted crawler): served
  as before, nothing counted. A rule names its crawler from the known-crawlers list
  (``crawler = "GPTBot"``, ``"*"`` for any of them) or by a user-agent pattern
  (``user_agent = "regex"`` with a ``name``), says what it covers (``asks``: ``any``,
  ``original`` or ``above`` with a pixel size) and what to do (``action``: ``allow``,
  ``refuse``, ``charge`` with a ``price``). ``verify = true`` demands a valid Web Bot Auth
  signature (focal.server.botauth) from a key the rule ties to the crawler: pinned (``keys``, a
  JWKS file) or published in the directory of one of its ``agents``.
- **Pay per crawl**: a charged crawler without an offer gets 402 and ``crawler-price``; an offer
  (``crawler-exact-price`` or ``crawler-max-price``) at or above the price, covered by a
  signature that verifies, gets the image with ``crawler-charged``, recorded in the log and
  /metrics when the answer is a 200. Headers and error codes follow Cloudflare's pay per crawl.

The user agent is only a claim; what a signature proves is docs/crawlers.md's subject.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from focal.errors import CrawlerError, PaymentRequiredError, SettingsError
from focal.options import Options
from focal.server import logs
from focal.server.settings import Settings

KNOWN_CRAWLERS = Path(__file__).with_name("known_crawlers") / "robots.json"
ACTIONS = ("allow", "refuse", "charge")
ASKS = ("any", "original", "above")
SIGNALS = ("search", "ai-input", "ai-train")
PRICE = re.compile(r"^([A-Z]{3}) ([0-9]{1,9}(?:\.[0-9]{1,6})?)$")
RULE_KEYS = {"name", "crawler", "user_agent", "asks", "above", "action", "price", "verify"}
RULE_KEYS |= {"agents", "keys"}
MAX_UA = 1024  # characters of User-Agent matched against the rules
MATCH_CACHE = 1024  # User-Agents whose known-crawler match each rule remembers


# ---- the known-crawlers list ---------------------------------------------------------------


def known_names(path: Path | None) -> tuple[str, ...]:
    """User-agent names from a robots.json (an object keyed by name) or a JSON array of names;
    the shipped snapshot when ``path`` is None."""
    source = path if path is not None else KNOWN_CRAWLERS
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"Cannot read the known-crawlers file {source}: {exc}") from None
    names = list(data) if isinstance(data, dict | list) else []
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SettingsError(
            f"Expected a JSON object keyed by user-agent name, or an array of names, in the "
            f"known-crawlers file {source}"
        )
    return tuple(dict.fromkeys(n.strip() for n in names))


TOKEN = re.compile(r"[\w-]+")


class Names:
    """Finds any of the names as whole tokens of a User-Agent (case-insensitive; a token is a
    run of letters, digits, ``_`` and ``-``), the longest name first, so that ``ClaudeBot`` is
    never read as a shorter name. One pass over the User-Agent's tokens with a dictionary
    lookup each (an alternation of 166 names in one regular expression costs several times
    more), and the answers for the last ``MATCH_CACHE`` User-Agents remembered: most requests
    come with a User-Agent seen before."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_first: dict[str, list[tuple[str, str]]] = {}
        for name in sorted(set(names), key=len, reverse=True):
            low = name.lower()
            first = TOKEN.match(low)
            key = first.group(0) if first is not None and first.start() == 0 else low
            self._by_first.setdefault(key, []).append((low, name))
        self.find = functools.lru_cache(maxsize=MATCH_CACHE)(self._find)

    def _find(self, agent: str) -> str | None:
        low = agent.lower()
        for token in TOKEN.finditer(low):
            for name, canonical in self._by_first.get(token.group(0), ()):
                end = token.start() + len(name)
                if low.startswith(name, token.start()) and (
                    end == len(low) or not (low[end].isalnum() or low[end] in "_-")
                ):
                    return canonical
        return None


class Pattern:
    """A rule's own user-agent regular expression (case-insensitive)."""

    def __init__(self, regex: str) -> None:
        self._regex = re.compile(regex, re.IGNORECASE)

    def find(self, agent: str) -> str | None:
        match = self._regex.search(agent)
        return match.group(0) if match is not None else None


# ---- prices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    currency: str
    amount: Decimal

    def __str__(self) -> str:
        return f"{self.currency} {self.amount}"


def parse_price(text: str) -> Price | None:
    """``USD 0.01`` as a Price; None if it is not one."""
    match = PRICE.match(text.strip())
    if match is None:
        return None
    try:
        return Price(match.group(1), Decimal(match.group(2)))
    except InvalidOperation:
        return None


# ---- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str  # the crawler's label in logs and metrics ("" with crawler = "*": the name matched)
    pattern: Names | Pattern
    asks: str = "any"
    above: int = 0
    action: str = "allow"
    price: Price | None = None
    verify: bool = False
    agents: tuple[str, ...] = ()
    keys: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_signature(self) -> bool:
        return self.verify or self.action == "charge"

    def covers(self, options: Options) -> bool:
        if self.asks == "any":
            return True
        size = requested_size(options)
        if self.asks == "original":
            return size is None
        return size is None or size > self.above


def requested_size(options: Options) -> int | None:
    """The longest side asked for (width/height times dpr); None: the source's own size."""
    sides = [s for s in (options.width, options.height) if s is not None]
    if not sides:
        return None
    return int(max(sides) * (options.dpr or 1))


def load_rules(path: Path, known: Sequence[str]) -> tuple[Rule, ...]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"Cannot read crawler_rules file {path}: {exc}") from None
    unknown = set(document) - {"rule"}
    if unknown or not isinstance(document.get("rule", []), list):
        raise SettingsError(
            f"Expected only [[rule]] tables in crawler_rules file {path} but found "
            f"{sorted(unknown) or 'rule'}"
        )
    return tuple(_rule(path, i + 1, raw, known) for i, raw in enumerate(document.get("rule", [])))


def _rule(path: Path, number: int, raw: dict[str, Any], known: Sequence[str]) -> Rule:
    where = f"rule {number} of crawler_rules file {path}"

    def bad(what: str) -> SettingsError:
        return SettingsError(f"{where}: {what}")

    extra = set(raw) - RULE_KEYS
    if extra:
        raise bad(f"unknown key(s) {sorted(extra)}; expected some of {sorted(RULE_KEYS)}")
    name, pattern = _crawler(raw, known, bad)
    action, asks = raw.get("action", "allow"), raw.get("asks", "any")
    if action not in ACTIONS:
        raise bad(f"expected action to be one of {', '.join(ACTIONS)} but found {action!r}")
    if asks not in ASKS:
        raise bad(f"expected asks to be one of {', '.join(ASKS)} but found {asks!r}")
    above = raw.get("above", 0)
    if asks == "above" and (type(above) is not int or above < 1):
        raise bad(f'expected above = <pixels, at least 1> with asks = "above" but found {above!r}')
    price = parse_price(str(raw["price"])) if "price" in raw else None
    if (action == "charge") != (price is not None and price.amount > 0):
        raise bad('expected price = "USD 0.01" (above zero) exactly when action = "charge"')
    agents = raw.get("agents", [])
    if not isinstance(agents, list) or not all(
        isinstance(a, str) and a.startswith(("https://", "http://")) for a in agents
    ):
        raise bad('expected agents = ["https://agent.example", ...]')
    keys = _pinned_keys(path, raw.get("keys"), bad)
    verify = bool(raw.get("verify", False))
    rule = Rule(name, pattern, asks, int(above), action, price, verify, tuple(agents), keys)
    if rule.needs_signature and not (agents or keys):
        raise bad(
            "a rule that verifies or charges needs agents (Signature-Agent origins whose key "
            "directories count) or keys (a JWKS file of pinned keys): otherwise any key would do"
        )
    return rule


def _crawler(raw: dict[str, Any], known: Sequence[str], bad: Any) -> tuple[str, Names | Pattern]:
    crawler, user_agent = raw.get("crawler"), raw.get("user_agent")
    if (crawler is None) == (user_agent is None):
        raise bad("expected exactly one of crawler (a known name, or *) and user_agent (regex)")
    if user_agent is not None:
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad("a user_agent rule needs a name (its label in logs and metrics)")
        try:
            return name.strip(), Pattern(str(user_agent))
        except re.error as exc:
            raise bad(f"user_agent is not a regular expression: {exc}") from None
    if crawler == "*":
        return "", Names(known)
    canonical = {n.lower(): n for n in known}.get(str(crawler).lower())
    if canonical is None:
        raise bad(
            f"crawler {crawler!r} is not on the known-crawlers list (known_crawlers); "
            "name it with user_agent and name instead"
        )
    return canonical, Names([canonical])


def _pinned_keys(path: Path, keys: object, bad: Any) -> dict[str, Any]:
    if keys is None:
        return {}
    from focal.server import botauth

    botauth.require()
    file = (path.parent / str(keys)).expanduser()
    try:
        found = botauth.ed25519_keys(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError, botauth.BotAuthError) as exc:
        raise bad(f"cannot read the keys file {file} (a JWKS of Ed25519 keys): {exc}") from None
    if not found:
        raise bad(f"the keys file {file} holds no Ed25519 key")
    return found


# ---- robots.txt ----------------------------------------------------------------------------


def check_signal(text: str) -> str:
    """A Content-Signal value (``search=yes, ai-train=no``), checked; SettingsError otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for part in parts:
        key, _, value = part.partition("=")
        if key.strip() not in SIGNALS or value.strip() not in ("yes", "no"):
            raise SettingsError(
                f"Expected content_signal to be comma-separated {'/'.join(SIGNALS)}=yes|no "
                f"(for example search=yes, ai-train=no) but received {text!r}"
            )
    return ", ".join(parts)


def robots_text(settings: Settings, known: Sequence[str]) -> str:
    """/robots.txt: the managed section (if any), then the operator's file as written."""
    lines: list[str] = []
    signal = check_signal(settings.content_signal) if settings.content_signal else ""
    if signal or settings.robots_managed:
        lines.append("# BEGIN focal managed content")
        if signal:
            lines += ["User-agent: *", f"Content-Signal: {signal}", "Allow: /", ""]
        if settings.robots_managed:
            lines += [f"User-agent: {name}" for name in known]
            lines += ["Disallow: /", ""]
        lines += ["# END focal managed content", ""]
    if settings.robots_txt:
        path = Path(settings.robots_txt).expanduser()
        try:
            lines.append(path.read_text(encoding="utf-8").rstrip("\n"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"Cannot read robots_txt file {path}: {exc}") from None
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- decisions -----------------------------------------------------------------------------


@dataclass
class Decision:
    """What a rule decided for one request; its log fields and, once answered, its charge."""

    crawler: str
    rule: int
    outcome: str  # allowed, refused, price_quoted, unverified, bad_offer, charged, not_charged
    verified: bool = False
    agent: str | None = None
    price: Price | None = None
    detail: str = ""
    refusal: CrawlerError | None = None  # the answer instead of the image
    method: str = "GET"

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.crawler, "rule": self.rule, "outcome": self.outcome}
        out["verified"] = self.verified
        if self.agent:
            out["agent"] = self.agent
        if self.price is not None:
            out["price"] = str(self.price)
        if self.detail:
            out["detail"] = self.detail
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Counters:
    """Decisions by crawler and outcome, charges and their amounts: /metrics families."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[tuple[str, str], int] = {}
        self.charges: dict[tuple[str, str], tuple[int, Decimal]] = {}

    def count(self, crawler: str, outcome: str) -> None:
        with self._lock:
            key = (crawler, outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def charge(self, crawler: str, price: Price) -> None:
        with self._lock:
            key = (crawler, price.currency)
            count, total = self.charges.get(key, (0, Decimal(0)))
            self.charges[key] = (count + 1, total + price.amount)

    def lines(self) -> Iterable[str]:
        with self._lock:
            outcomes, charges = dict(self.outcomes), dict(self.charges)
        yield "# HELP focal_crawler_requests_total Image requests a crawler rule decided, by "
        yield "# TYPE focal_crawler_requests_total counter"
        for (crawler, outcome), n in sorted(outcomes.items()):
            labels = f'crawler="{_label(crawler)}",outcome="{outcome}"'
            yield f"focal_crawler_requests_total{{{labels}}} {n}"
        yield "# HELP focal_crawler_charges_total Charged crawler responses (pay per crawl)."
        yield "# TYPE focal_crawler_charges_total counter"
        for (crawler, currency), (n, _) in sorted(charges.items()):
            labels = f'crawler="{_label(crawler)}",currency="{currency}"'
            yield f"focal_crawler_charges_total{{{labels}}} {n}"
        yield "# HELP focal_crawler_charged_amount_total Amount charged to crawlers, by currency."
        yield "# TYPE focal_crawler_charged_amount_total counter"
        for (crawler, currency), (_, total) in sorted(charges.items()):
            labels = f'crawler="{_label(crawler)}",currency="{currency}"'
            yield f"focal_crawler_charged_amount_total{{{labels}}} {total}"


@dataclass
class Policy:
    """The crawler settings, built once: robots.txt text and the rules with what they need."""

    rules: tuple[Rule, ...]
    robots: str | None  # None: /robots.txt stays unanswered (404)
    authenticator: Any = None  # botauth.Authenticator when a rule needs signatures
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        def any_rule(agent: str) -> bool:
            return any(rule.pattern.find(agent) is not None for rule in self.rules)

        self._any_rule = functools.lru_cache(maxsize=MATCH_CACHE)(any_rule)

    async def decide(self, request: Any, options: Options) -> Decision | None:
        """What the first rule matching this request decided (None: no rule matches, serve as
        usual); a refusal is the decision's ``refusal``: CrawlerError (403, 400) or
        PaymentRequiredError (402)."""
        agent = request.headers.get("user-agent", "")[:MAX_UA]
        if not self._any_rule(agent):  # a browser: one remembered answer, no rule tried
            return None
        for number, rule in enumerate(self.rules, 1):
            found = rule.pattern.find(agent)
            if found is None or not rule.covers(options):
                continue
            decision = Decision(crawler=rule.name or found, rule=number, outcome="")
            decision.method = getattr(request, "method", "GET")
            try:
                await self._apply(rule, decision, request)
            except CrawlerError as refusal:
                decision.refusal = refusal
            if decision.outcome != "charge":  # a charge is counted once answered (settle)
                self.counters.count(decision.crawler, decision.outcome)
            return decision
        return None

    async def _apply(self, rule: Rule, decision: Decision, request: Any) -> None:
        name = decision.crawler
        if rule.action == "refuse":
            decision.outcome = "refused"
            raise CrawlerError(
                f"This server does not serve these images to {name} (crawler policy)",
                code="CrawlerForbidden",
            )
        offer = None
        if rule.action == "charge":
            try:
                offer = self._offer(rule, decision, request)
            except CrawlerError:  # a 402 quote or a malformed offer
                if rule.verify:  # a crawler that must prove who it is does so for a quote too
                    await self._verify(rule, decision, request, ())
                raise
        if rule.needs_signature:  # an offer counts only when the signature covers it
            await self._verify(rule, decision, request, (offer,) if offer else ())
        decision.outcome = "charge" if rule.action == "charge" else "allowed"

    def _offer(self, rule: Rule, decision: Decision, request: Any) -> str:
        """The price header the crawler offers with, checked against the rule's price."""
        price = rule.price
        assert price is not None
        decision.price = price
        exact = request.headers.get("crawler-exact-price")
        most = request.headers.get("crawler-max-price")
        if exact is None and most is None:
            decision.outcome = "price_quoted"
            raise PaymentRequiredError(
                f"{decision.crawler} is charged {price} per image here: offer it with "
                "crawler-exact-price or crawler-max-price, signed (Web Bot Auth)",
                price=str(price),
                code="MissingCrawlerPrice",
            )
        if exact is not None and most is not None:
            decision.outcome = "bad_offer"
            raise CrawlerError(
                "Send only one of crawler-exact-price and crawler-max-price",
                code="ConflictingPriceHeaders",
                status=400,
            )
        header = "crawler-exact-price" if exact is not None else "crawler-max-price"
        offered = parse_price(exact if exact is not None else str(most))
        if offered is None:
            decision.outcome = "bad_offer"
            raise CrawlerError(
                f"{header} must be a currency and an amount, like USD 0.01",
                code="InvalidCrawlerPriceValue",
                status=400,
            )
        too_low = offered.currency != price.currency or (
            offered.amount != price.amount if exact is not None else offered.amount < price.amount
        )
        if too_low:
            decision.outcome = "price_quoted"
            code = "InvalidCrawlerExactPrice" if exact is not None else "InvalidCrawlerMaxPrice"
            raise PaymentRequiredError(
                f"The offer ({header}: {offered}) does not meet the price of {price}",
                price=str(price),
                code=code,
            )
        return header

    async def _verify(
        self, rule: Rule, decision: Decision, request: Any, required: Sequence[str]
    ) -> None:
        from focal.server import botauth

        try:
            verified = await self.authenticator.verify(
                signed_request(request), rule.keys, rule.agents, required
            )
        except botauth.BotAuthError as exc:
            decision.outcome = "unverified"
            decision.detail = str(exc)
            raise CrawlerError(
                f"The request claims to be {decision.crawler} but its Web Bot Auth signature "
                f"was not accepted: {exc}",
                code="InvalidSignature",
            ) from None
        decision.verified, decision.agent = True, verified.agent

    def settle(self, decision: Decision, status: int, headers: Any) -> None:
        """After the answer: a charge is made (header, log, metric) only for a 200 to a GET."""
        if decision.outcome != "charge" or decision.price is None:
            return
        if status != 200 or decision.method != "GET":
            decision.outcome = "not_charged"
            self.counters.count(decision.crawler, "not_charged")
            return
        decision.outcome = "charged"
        headers["crawler-charged"] = str(decision.price)
        headers["Cache-Control"] = "no-store"  # a shared cache must not hand it out for free
        self.counters.charge(decision.crawler, decision.price)
        self.counters.count(decision.crawler, "charged")
        logs.event("crawler charged", decision.fields())


def signed_request(request: Any) -> Any:
    """The request as a signature covers it: the URL as the client addressed it."""
    from focal.server import botauth

    scope = request.scope
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    host = request.headers.get("host", "")
    url = f"{scope.get('scheme', 'http')}://{host}{raw.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    return botauth.SignedRequest(method=scope["method"], url=url, headers=request.headers)


# ---- building it ---------------------------------------------------------------------------


def enabled(settings: Settings) -> bool:
    return bool(settings.crawler_rules) or serves_robots(settings)


def routes(settings: Settings, policy: Policy | None) -> list[BaseRoute]:
    """/robots.txt when a robots setting is set, answered from ``policy`` (the one
    :func:`build` made of the same settings); nothing otherwise (404, as without them)."""
    if not serves_robots(settings):
        return []
    text = policy.robots if policy is not None else None

    async def robots(request: Request) -> Response:
        if text is None:
            raise HTTPException(404)
        return PlainTextResponse(text, headers={"Cache-Control": "max-age=3600"})

    return [Route("/robots.txt", robots, methods=["GET", "HEAD"])]


def serves_robots(settings: Settings) -> bool:
    return bool(settings.robots_txt or settings.robots_managed or settings.content_signal)


def build(settings: Settings) -> Policy | None:
    """The policy of the settings, or None when no crawler setting is set. SettingsError for a
    rules file, robots file or known-crawlers file that cannot be used."""
    if not enabled(settings):
        return None
    list_path = Path(settings.known_crawlers).expanduser() if settings.known_crawlers else None
    known = known_names(list_path)
    rules: tuple[Rule, ...] = ()
    if settings.crawler_rules:
        rules = load_rules(Path(settings.crawler_rules).expanduser(), known)
    robots = robots_text(settings, known) if serves_robots(settings) else None
    authenticator = None
    if any(rule.needs_signature for rule in rules):
        authenticator = make_authenticator(settings)
    return Policy(rules=rules, robots=robots, authenticator=authenticator)


def make_authenticator(settings: Settings) -> Any:
    from focal.server import botauth

    botauth.require()
    try:
        directory = botauth.KeyDirectory.from_strings(
            settings.crawler_directory_networks,
            timeout_s=settings.crawler_directory_timeout_s,
            max_bytes=settings.crawler_directory_max_bytes,
            max_ttl_s=settings.crawler_key_max_age_s,
        )
    except ValueError as exc:
        raise SettingsError(f"Expected CIDRs in crawler_directory_networks: {exc}") from None
    return botauth.Authenticator(
        directory=directory,
        skew_s=settings.crawler_clock_skew_s,
        max_age_s=settings.crawler_signature_max_age_s,
    )
