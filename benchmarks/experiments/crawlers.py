"""What crawler control costs everyone else: a cached variant with crawler settings on vs off.

Three ``focal serve`` processes on the same demo root (face detection off, one image thread):
two with no crawler setting (the second is the A/A control: how far two identical servers
differ on this shared machine), one with a rules file of five rules (the known-crawlers list as a
whole, two named crawlers, a user-agent pattern), the managed robots.txt and a Content-Signal.
Each is warmed on one variant, then asked for it again and again by a browser (a User-Agent no
rule matches: the rules are tried and none applies, the common case) over one keep-alive
connection; the servers take turns, ``--batch`` requests each per round, ``--rounds``
rounds, the order rotated each round (drift on a shared machine falls on all alike).
Reported: the servers' CPU time per request over all rounds (user + system, from /proc: less
disturbed by other work on the machine than wall time) and the median wall milliseconds per
request, each with its on/off ratio. In process: the same request through the two
applications (``httpx.ASGITransport``), alternating, ``--asgi-requests`` each (median
microseconds); and one ``Policy.decide`` alone for the same browser and for a listed crawler
a rule allows.

    .venv/bin/python benchmarks/experiments/crawlers.py [--rounds 15] [--batch 200] \
        [--asgi-requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
from focal.options import parse_options
from focal.server import crawlers
from focal.server.app import create_app
from focal.server.settings import Settings

COMMAND = ".venv/bin/python benchmarks/experiments/crawlers.py"
PATH = "/cdn-cgi/image/width=320,format=jpeg/astronaut.jpg"
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
CRAWLER = "Mozilla/5.0 (compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)"
RULES = """
[[rule]]
crawler = "Bytespider"
action = "refuse"

[[rule]]
crawler = "GPTBot"
asks = "above"
above = 1024
action = "refuse"

[[rule]]
name = "ExampleBot"
user_agent = "ExampleBot/\\\\d"
action = "refuse"

[[rule]]
crawler = "*"
asks = "original"
action = "refuse"

[[rule]]
crawler = "*"
action = "allow"
"""


def crawler_settings(state: Path) -> list[str]:
    return [
        "--crawler-rules",
        write_rules(state),
        "--robots-managed",
        "--content-signal",
        "search=yes, ai-train=no",
    ]


def serve(tag: str, on: bool) -> harness.Server:
    extra = ["--no-face", "--concurrency", "1", "--no-playground"]
    server = harness.focal_server(harness.DEMO, cache=True, extra=extra, tag=tag)
    if on:
        server.cmd += crawler_settings(server.log.parent)
    return server


SERVERS = (("off", False), ("off_again", False), ("on", True))


def http_ab(rounds: int, batch: int) -> dict[str, Any]:
    """Three real servers: off, off again (the A/A control: how far two identical servers
    differ on this machine) and on; ``batch`` requests to each in turn, the order rotated."""
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(harness.running(serve(f"crawlers-{name}", on)))
            for name, on in SERVERS
        }
        client = stack.enter_context(httpx.Client(headers={"User-Agent": BROWSER}, timeout=30))
        for server in servers.values():  # the variant cached, the connection open
            for _ in range(20):
                response = client.get(server.base + PATH)
                assert response.status_code == 200, response.text
        assert client.get(servers["on"].base + "/robots.txt").status_code == 200
        assert client.get(servers["off"].base + "/robots.txt").status_code == 404
        wall: dict[str, list[float]] = {name: [] for name in servers}
        cpu = dict.fromkeys(servers, 0.0)
        names = list(servers)
        for round_ in range(rounds):
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                server = servers[name]
                cpu_before, start = server_cpu(server.pid), time.perf_counter()
                for _ in range(batch):
                    client.get(server.base + PATH)
                wall[name].append((time.perf_counter() - start) * 1000 / batch)
                cpu[name] += server_cpu(server.pid) - cpu_before
    requests = rounds * batch
    cpu_ms = {name: cpu[name] * 1000 / requests for name in cpu}
    wall_ms = {name: harness.median(times) for name, times in wall.items()}
    return {
        "path": PATH,
        "user_agent": BROWSER,
        "rounds": rounds,
        "batch": batch,
        "server_cpu_ms_per_request": {k: round(v, 4) for k, v in cpu_ms.items()},
        "server_cpu_on_over_off": round(cpu_ms["on"] / cpu_ms["off"], 4),
        "server_cpu_off_again_over_off": round(cpu_ms["off_again"] / cpu_ms["off"], 4),
        "wall_ms_median": {k: round(v, 4) for k, v in wall_ms.items()},
        "wall_on_over_off": round(wall_ms["on"] / wall_ms["off"], 4),
        "wall_off_again_over_off": round(wall_ms["off_again"] / wall_ms["off"], 4),
    }


def server_cpu(pid: int) -> float:
    """CPU seconds of the server process and its children (a clock-tick resolution each)."""
    return sum(harness.cpu_seconds(p) for p in (pid, *harness.children(pid)))


def asgi_ab(requests: int) -> dict[str, Any]:
    """The same request through two applications in this one process, off and on, one request
    of each in turn: the cost of the check without the server's and the client's HTTP work
    (so a larger share of the whole than over HTTP)."""
    folder = harness.fresh_state("crawlers-asgi")
    apps = {
        name: create_app(
            Settings(
                face=False,
                playground=False,
                concurrency=1,
                cache_dir=folder / name,
                **({"crawler_rules": write_rules(folder)} if on else {}),
            )
        )
        for name, on in (("off", False), ("on", True))
    }

    async def run() -> dict[str, list[float]]:
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"User-Agent": BROWSER},
            )
            for name, app in apps.items()
        }
        times: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            for _ in range(20):
                assert (await client.get(PATH)).status_code == 200
        for i in range(requests):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                start = time.perf_counter()
                await clients[name].get(PATH)
                times[name].append((time.perf_counter() - start) * 1e6)
        for client in clients.values():
            await client.aclose()
        return times

    times = asyncio.run(run())
    for app in apps.values():
        app.state.service.workers.shutdown()
    medians = {name: harness.median(values) for name, values in times.items()}
    return {
        "requests_each": requests,
        "us_median": {k: round(v, 2) for k, v in medians.items()},
        "on_over_off": round(medians["on"] / medians["off"], 4),
    }


def write_rules(folder: Path) -> str:
    path = folder / "rules.toml"
    path.write_text(RULES)
    return str(path)


def decide_us(agent: str, calls: int = 20000) -> float:
    """Microseconds of one Policy.decide (the in-process cost, no HTTP), median of 5 runs."""
    folder = harness.fresh_state("crawlers-decide")
    policy = crawlers.build(Settings(crawler_rules=write_rules(folder)))
    assert policy is not None
    request = SimpleNamespace(headers={"user-agent": agent})
    options = parse_options("width=320,format=jpeg")

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await policy.decide(request, options)
        return (time.perf_counter() - start) / calls * 1e6

    return round(harness.median([asyncio.run(loop()) for _ in range(5)]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--asgi-requests", type=int, default=3000)
    args = parser.parse_args()
    result = {
        "http": http_ab(args.rounds, args.batch),
        "asgi": asgi_ab(args.asgi_requests),
        "decide_us": {"browser": decide_us(BROWSER), "listed_crawler_allowed": decide_us(CRAWLER)},
        "note": "2-core machine shared with other work while measured",
    }
    http, asgi = result["http"], result["asgi"]
    print(
        f"cached variant, browser: server CPU per request {http['server_cpu_ms_per_request']} ms "
        f"(on/off {http['server_cpu_on_over_off']}x, A/A {http['server_cpu_off_again_over_off']}x)"
        f", wall median {http['wall_ms_median']} ms (on/off {http['wall_on_over_off']}x, A/A "
        f"{http['wall_off_again_over_off']}x); in process {asgi['us_median']} us "
        f"({asgi['on_over_off']}x); decide: {result['decide_us']} us"
    )
    harness.write_result("crawlers", result, COMMAND)


if __name__ == "__main__":
    main()
