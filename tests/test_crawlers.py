"""Crawler control (focal.server.crawlers): robots.txt, per-crawler rules and pay per crawl, on a
real ``focal serve`` with real key-directory servers on loopback; the rules file's checks and
the known-crawlers matching without a server."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import webbotauth as wba
from tests.live import Live, serve

from focal.errors import SettingsError
from focal.options import parse_options
from focal.server import crawlers
from focal.server.settings import Settings

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SMALL = "/cdn-cgi/image/width=64/astronaut.jpg"
BIG = "/cdn-cgi/image/width=1024/astronaut.jpg"
ORIGINAL = "/cdn-cgi/image/format=jpeg/astronaut.jpg"
HOST = "example.com"  # the authority the requests are signed for (sent as Host)


# ---- without a server ------------------------------------------------------------------------


def write_rules(folder: Path, text: str) -> Path:
    path = folder / "rules.toml"
    path.write_text(text)
    return path


def test_known_names_match_whole_tokens_only() -> None:
    pattern = crawlers.Names(crawlers.known_names(None))
    assert pattern.find("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)")
    found = pattern.find("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
                           "ClaudeBot/1.0; +claudebot@anthropic.com)")  # fmt: skip
    assert found == "ClaudeBot"
    assert pattern.find("Mozilla/5.0 (compatible; Claude-Web/1.0)") == "Claude-Web"
    assert pattern.find("ChatGPT Agent/1.0") == "ChatGPT Agent"
    assert pattern.find("mistralai-user/1.0 (+https://docs.mistral.ai)") == "MistralAI-User/1.0"
    assert pattern.find("Spider-Man/2") is None and pattern.find("GPTBots/1") is None
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    for browser in (CHROME, firefox, "curl/8.11.1"):
        assert pattern.find(browser) is None, browser


def test_the_shipped_list_is_the_dated_snapshot() -> None:
    names = crawlers.known_names(None)
    assert len(names) == 166 and "GPTBot" in names and "CCBot" in names
    folder = crawlers.KNOWN_CRAWLERS.parent
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "738c80df2169027ce0e07c9976fd3f2f57dd8f7b" in (folder / "SOURCE.md").read_text()


def test_a_replacement_list_can_be_an_array(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text('["OnlyBot"]')
    assert crawlers.known_names(path) == ("OnlyBot",)
    path.write_text("{}")
    with pytest.raises(SettingsError, match="known-crawlers file"):
        crawlers.known_names(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\ncrawler = "NoSuchBot"\naction = "refuse"', "not on the known-crawlers list"),
        ('[[rule]]\ncrawler = "GPTBot"\naction = "block"', "action to be one of"),
        ('[[rule]]\ncrawler = "GPTBot"\naction = "charge"', 'price = "USD 0.01"'),
        ('[[rule]]\ncrawler = "GPTBot"\naction = "charge"\nprice = "USD 0.01"', "needs agents"),
        ('[[rule]]\ncrawler = "GPTBot"\nverify = true', "needs agents"),
        ('[[rule]]\nuser_agent = "x"\naction = "refuse"', "needs a name"),
        ('[[rule]]\ncrawler = "GPTBot"\nasks = "above"', "above = <pixels"),
        ('[[rule]]\ncrawler = "GPTBot"\ncolour = "red"', "unknown key"),
        ('[[rule]]\nname = "x"\nuser_agent = "("', "not a regular expression"),
        ("[robots]\nx = 1", r"only \[\[rule\]\] tables"),
    ],
)
def test_rules_file_mistakes_name_the_rule_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    settings = Settings(crawler_rules=str(write_rules(tmp_path, text)))
    with pytest.raises(SettingsError, match=message) as caught:
        crawlers.build(settings)
    assert "rules.toml" in str(caught.value)


def test_no_crawler_settings_build_nothing() -> None:
    assert crawlers.build(Settings()) is None


def test_a_missing_crawlers_extra_is_a_clear_start_up_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "http_message_signatures", None)  # import fails
    rules = write_rules(
        tmp_path, '[[rule]]\ncrawler = "GPTBot"\nverify = true\nagents = ["https://a.example"]'
    )
    with pytest.raises(
        SettingsError, match=r"crawlers extra: pip install 'focal-images\[crawlers\]'"
    ):
        crawlers.build(Settings(crawler_rules=str(rules)))
    refuse_only = write_rules(tmp_path, '[[rule]]\ncrawler = "GPTBot"\naction = "refuse"')
    assert crawlers.build(Settings(crawler_rules=str(refuse_only))) is not None  # needs no extra


def test_asks_picks_originals_and_sizes() -> None:
    pattern = crawlers.Names(["GPTBot"])
    above = crawlers.Rule("GPTBot", pattern, asks="above", above=512)
    original = crawlers.Rule("GPTBot", pattern, asks="original")
    assert above.covers(parse_options("width=1024"))
    assert not above.covers(parse_options("width=64"))
    assert above.covers(parse_options("width=300,dpr=2"))  # 600 pixels asked
    assert above.covers(parse_options("format=jpeg"))  # no size: the source's own
    assert original.covers(parse_options("quality=80"))
    assert not original.covers(parse_options("height=10"))


def test_content_signal_is_checked() -> None:
    assert crawlers.check_signal("search=yes,ai-train=no") == "search=yes, ai-train=no"
    with pytest.raises(SettingsError, match="content_signal"):
        crawlers.check_signal("ai-train=maybe")


# ---- on a real server ------------------------------------------------------------------------

RULES = """
[[rule]]
crawler = "Bytespider"
action = "refuse"

[[rule]]
crawler = "CCBot"
asks = "above"
above = 512
action = "charge"
price = "USD 0.01"
keys = "keys.json"

[[rule]]
crawler = "CCBot"
action = "allow"

[[rule]]
crawler = "GPTBot"
verify = true
agents = ["{good}"]

[[rule]]
name = "SlowBot"
user_agent = "SlowBot/\\\\d"
verify = true
agents = ["{slow}"]

[[rule]]
name = "HugeBot"
user_agent = "HugeBot/\\\\d"
verify = true
agents = ["{huge}"]

[[rule]]
name = "FencedBot"
user_agent = "FencedBot/\\\\d"
verify = true
agents = ["{fenced}"]

[[rule]]
name = "ExampleBot"
user_agent = "ExampleBot/\\\\d"
action = "refuse"

[[rule]]
crawler = "*"
asks = "original"
action = "refuse"
"""


@pytest.fixture(scope="module")
def directories() -> Iterator[dict[str, Any]]:
    with (
        wba.directory("good") as good,
        wba.directory("slow") as slow,
        wba.directory("huge") as huge,
        wba.listener("127.0.0.2") as (fenced_port, fenced),
    ):
        yield {"good": good, "slow": slow, "huge": huge, "fenced": fenced, "port": fenced_port}


def start(folder: Path, rules: str, extra: str = "") -> Live:
    (folder / "keys.json").write_text(json.dumps(wba.TEST_JWKS))
    (folder / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    write_rules(folder, rules)
    config = folder / "focal.toml"
    config.write_text(
        f'cache_dir = "{folder / "cache"}"\nface = false\nplayground = false\n'
        f'crawler_rules = "{folder / "rules.toml"}"\nrobots_txt = "{folder / "robots.txt"}"\n'
        'robots_managed = true\ncontent_signal = "search=yes, ai-train=no"\n'
        # loopback key directories are this test's own: allowed explicitly, and only 127.0.0.1
        'crawler_directory_networks = ["127.0.0.1/32"]\ncrawler_directory_timeout_s = 1.0\n' + extra
    )
    return serve(folder, ["--config", str(config)])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, directories: dict[str, Any]) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("crawlers")
    rules = RULES.format(
        good=directories["good"].url,
        slow=directories["slow"].url,
        huge=directories["huge"].url,
        fenced=f"http://127.0.0.2:{directories['port']}",
    )
    server = start(folder, rules)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vectors_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server whose signature window is long enough for Cloudflare's far-future vectors."""
    folder = tmp_path_factory.mktemp("vectors")
    rules = '[[rule]]\ncrawler = "ClaudeBot"\nverify = true\nkeys = "keys.json"\n'
    server = start(folder, rules, "crawler_signature_max_age_s = 4000000000\n")
    yield server
    server.stop()


def get(live: Live, path: str, agent: str, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"User-Agent": agent, "Host": HOST} | (headers or {})
    return httpx.get(live.url(path), headers=sent, timeout=20)


def signed(path: str, extra: dict[str, str] | None = None, **kwargs: Any) -> dict[str, str]:
    return wba.sign(f"http://{HOST}{path}", extra, **kwargs)


def metric(live: Live, name: str, **labels: str) -> float:
    text = httpx.get(live.url("/metrics"), timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def crawler_lines(live: Live) -> list[dict[str, Any]]:
    lines = []
    for line in live.log.read_text().splitlines():
        if line.startswith("{") and '"crawler"' in line:
            lines.append(json.loads(line))
    return lines


def assert_refused(response: httpx.Response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["crawler-error"] == code
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == status and words in body["error"], body


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_robots_txt_has_the_managed_section_then_the_operators_rules(live: Live) -> None:
    response = httpx.get(live.url("/robots.txt"), timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    managed, _, own = text.partition("# END focal managed content\n")
    assert managed.startswith("# BEGIN focal managed content\nUser-agent: *\n")
    assert "Content-Signal: search=yes, ai-train=no\nAllow: /\n" in managed
    assert "User-agent: GPTBot\n" in managed and "User-agent: Bytespider\n" in managed
    assert managed.rstrip().endswith("Disallow: /")
    assert own.strip() == "User-agent: *\nDisallow: /private/"
    # robots.txt is free of crawler rules: a refused crawler reads it too
    assert get(live, "/robots.txt", "Bytespider").text == text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_robots_txt_is_not_answered_without_crawler_settings(tmp_path: Path) -> None:
    server = serve(tmp_path, ["--no-face", "--cache-dir", str(tmp_path / "c")])
    try:
        assert httpx.get(server.url("/robots.txt"), timeout=10).status_code == 404
        response = httpx.get(server.url(SMALL), headers={"User-Agent": "Bytespider"}, timeout=20)
        assert response.status_code == 200 and "crawler-error" not in response.headers
        assert "focal_crawler" not in httpx.get(server.url("/metrics"), timeout=10).text
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_each_action_for_listed_unlisted_and_browser_agents(live: Live) -> None:
    assert_refused(get(live, SMALL, "Bytespider/1.0"), 403, "CrawlerForbidden", "Bytespider")
    assert get(live, SMALL, "CCBot/2.0 (https://commoncrawl.org/faq/)").status_code == 200
    original = get(live, ORIGINAL, "PerplexityBot/1.0")
    assert_refused(original, 403, "CrawlerForbidden", "PerplexityBot")
    assert get(live, SMALL, "PerplexityBot/1.0").status_code == 200  # not an original
    assert_refused(get(live, SMALL, "ExampleBot/3"), 403, "CrawlerForbidden", "ExampleBot")
    for agent in (CHROME, "curl/8.11.1", "SomeUnlistedBot/1.0"):  # no rule: served as before
        response = get(live, ORIGINAL, agent)
        assert response.status_code == 200 and "crawler-error" not in response.headers
    refused = get(live, SMALL + "?onerror=redirect", "Bytespider/1.0")
    assert refused.status_code == 403  # a refusal is never turned into a redirect
    assert metric(live, "focal_crawler_requests_total", crawler="Bytespider", outcome="refused")
    assert metric(live, "focal_crawler_requests_total", crawler="CCBot", outcome="allowed")
    assert metric(live, "focal_crawler_requests_total", crawler="PerplexityBot", outcome="refused")
    text = httpx.get(live.url("/metrics"), timeout=10).text
    assert "SomeUnlistedBot" not in text and "Chrome" not in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_crawler_that_must_verify_is_refused_without_a_valid_signature(
    live: Live, directories: dict[str, Any]
) -> None:
    before = metric(live, "focal_crawler_requests_total", crawler="GPTBot", outcome="unverified")
    assert_refused(get(live, SMALL, "GPTBot/1.2"), 403, "InvalidSignature", "claims to be GPTBot")
    agent = {"Signature-Agent": f'"{directories["good"].url}"'}
    covered = ("@authority", "signature-agent")
    tampered = signed(SMALL, agent, components=covered)
    tampered["Signature-Agent"] = f'"{directories["good"].url}/"'  # not what was signed
    assert_refused(get(live, SMALL, "GPTBot/1.2", tampered), 403, "InvalidSignature", "verify")
    now = time.time()
    replayed = signed(SMALL, agent, components=covered, created=now - 400, expires=now - 100)
    assert_refused(get(live, SMALL, "GPTBot/1.2", replayed), 403, "InvalidSignature", "expired")
    other = wba.private_key("A" * 43)
    unknown = signed(SMALL, agent, components=covered, key=other, keyid="some-other-key")
    assert_refused(get(live, SMALL, "GPTBot/1.2", unknown), 403, "InvalidSignature", "unknown key")
    after = metric(live, "focal_crawler_requests_total", crawler="GPTBot", outcome="unverified")
    assert after == before + 4
    logged = [line["crawler"] for line in crawler_lines(live) if line.get("status") == 403]
    assert any(c["name"] == "GPTBot" and "expired" in c.get("detail", "") for c in logged)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_valid_signature_with_keys_from_the_agents_directory_is_verified(
    live: Live, directories: dict[str, Any]
) -> None:
    url = directories["good"].url
    covered = ("@authority", "signature-agent")
    old = signed(SMALL, {"Signature-Agent": f'"{url}"'}, components=covered)
    new = signed(
        SMALL,
        {"Signature-Agent": f'agent1="{url}"'},
        components=("@authority", '"signature-agent";key="agent1"'),
    )
    for headers in (old, new):  # the quoted-string form, then the dictionary form
        response = get(live, SMALL, "GPTBot/1.2", headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
    assert directories["good"].requests == 1  # kept for its max-age
    # the same signed request again, within its window: its nonce is spent
    assert_refused(get(live, SMALL, "GPTBot/1.2", old), 403, "InvalidSignature", "replayed")
    logged = [line["crawler"] for line in crawler_lines(live) if line.get("status") == 200]
    assert any(c["name"] == "GPTBot" and c["verified"] and c["agent"] == url for c in logged)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slow_huge_and_fenced_key_directories_are_refused(
    live: Live, directories: dict[str, Any]
) -> None:
    covered = ("@authority", "signature-agent")
    for name, url in (
        ("SlowBot", directories["slow"].url),
        ("HugeBot", directories["huge"].url),
        ("FencedBot", f"http://127.0.0.2:{directories['port']}"),
    ):
        headers = signed(SMALL, {"Signature-Agent": f'"{url}"'}, components=covered)
        response = get(live, SMALL, f"{name}/1", headers)
        assert_refused(response, 403, "InvalidSignature", f"claims to be {name}")
    bodies = [line["crawler"].get("detail", "") for line in crawler_lines(live)]
    assert any("longer than 1 s" in b for b in bodies)
    assert any("over 65536 bytes" in b for b in bodies)
    assert any("127.0.0.2 is not allowed" in b for b in bodies)
    assert directories["fenced"] == []  # refused before any connection


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pay_per_crawl_402_then_a_signed_offer_then_200_charged(live: Live) -> None:
    agent = "CCBot/2.0"
    quote = get(live, BIG, agent)
    assert_refused(quote, 402, "MissingCrawlerPrice", "USD 0.01")
    assert quote.headers["crawler-price"] == "USD 0.01"
    unsigned = get(live, BIG, agent, {"crawler-max-price": "USD 0.05"})
    assert_refused(unsigned, 403, "InvalidSignature", "claims to be CCBot")
    uncovered = signed(BIG, {"crawler-max-price": "USD 0.05"})  # the offer is not signed
    assert_refused(get(live, BIG, agent, uncovered), 403, "InvalidSignature", "crawler-max-price")
    low = signed(BIG, {"crawler-max-price": "USD 0.005"}, components=("@authority",))
    assert_refused(get(live, BIG, agent, low), 402, "InvalidCrawlerMaxPrice", "USD 0.01")
    wrong = signed(BIG, {"crawler-exact-price": "USD 0.02"}, components=("@authority",))
    assert_refused(get(live, BIG, agent, wrong), 402, "InvalidCrawlerExactPrice", "USD 0.01")
    both = {"crawler-exact-price": "USD 0.01", "crawler-max-price": "USD 0.01"}
    assert_refused(get(live, BIG, agent, both), 400, "ConflictingPriceHeaders", "only one")
    before = metric(live, "focal_crawler_charges_total", crawler="CCBot", currency="USD")
    for header in ("crawler-exact-price", "crawler-max-price"):
        offer = signed(BIG, {header: "USD 0.01"}, components=("@authority", header))
        paid = get(live, BIG, agent, offer)
        assert paid.status_code == 200, paid.text
        assert paid.headers["crawler-charged"] == "USD 0.01"
        assert paid.headers["cache-control"] == "no-store"
        assert paid.headers["content-type"] == "image/jpeg" and len(paid.content) > 1000
    offer = signed(
        BIG, {"crawler-max-price": "USD 0.01"}, components=("@authority", "crawler-max-price")
    )
    head = httpx.head(live.url(BIG), headers={"User-Agent": agent, "Host": HOST} | offer)
    assert head.status_code == 200 and "crawler-charged" not in head.headers  # no body: no charge
    charges = metric(live, "focal_crawler_charges_total", crawler="CCBot", currency="USD")
    assert charges == before + 2
    not_charged = {"crawler": "CCBot", "outcome": "not_charged"}
    assert metric(live, "focal_crawler_requests_total", **not_charged) >= 1
    amount = metric(live, "focal_crawler_charged_amount_total", crawler="CCBot", currency="USD")
    assert amount >= 0.02
    quoted = {"crawler": "CCBot", "outcome": "price_quoted"}
    assert metric(live, "focal_crawler_requests_total", **quoted) >= 3
    events = [json.loads(line) for line in live.log.read_text().splitlines()
              if '"crawler charged"' in line]  # fmt: skip
    assert len(events) >= 2 and events[-1]["price"] == "USD 0.01" and events[-1]["verified"]
    charged = [c["crawler"] for c in crawler_lines(live) if c["crawler"]["outcome"] == "charged"]
    assert charged and charged[-1]["name"] == "CCBot"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cloudflare_vectors_over_a_real_server(vectors_live: Live) -> None:
    for vector in wba.vectors("v2"):  # valid until 2124; one with Signature-Agent, one without
        response = get(vectors_live, SMALL, "ClaudeBot/1.0", wba.vector_headers(vector))
        assert response.status_code == 200, response.text
    elsewhere = wba.vector_headers(wba.vectors("v2")[0]) | {"Host": "example.org"}
    tampered = get(vectors_live, SMALL, "ClaudeBot/1.0", elsewhere)
    assert_refused(tampered, 403, "InvalidSignature", "does not verify")
    for vector in wba.vectors("v1"):  # expired on 2025-01-01
        response = get(vectors_live, SMALL, "ClaudeBot/1.0", wba.vector_headers(vector))
        assert_refused(response, 403, "InvalidSignature", "expired")
    allowed = {"crawler": "ClaudeBot", "outcome": "allowed"}
    assert metric(vectors_live, "focal_crawler_requests_total", **allowed) == 2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_far_future_vector_is_outside_the_default_window(tmp_path: Path) -> None:
    rules = '[[rule]]\ncrawler = "ClaudeBot"\nverify = true\nkeys = "keys.json"\n'
    server = start(tmp_path, rules)
    try:
        response = get(server, SMALL, "ClaudeBot/1.0", wba.vector_headers(wba.vectors("v2")[0]))
        assert_refused(response, 403, "InvalidSignature", "window is longer than 3600 s")
    finally:
        server.stop()
