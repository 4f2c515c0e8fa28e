"""The three-way benchmark's interleaving and ratios (pure functions; no server runs).

.venv/bin/pytest benchmarks/test_threeway.py -q
"""

from __future__ import annotations

from typing import Any

import threeway


def test_each_round_rotates_the_order_so_every_server_takes_every_place() -> None:
    rounds = threeway.schedule(["focal", "thumbor", "ipx"], 3)
    assert rounds == [
        ["focal", "thumbor", "ipx"],
        ["thumbor", "ipx", "focal"],
        ["ipx", "focal", "thumbor"],
    ]
    for place in range(3):
        assert {r[place] for r in rounds} == {"focal", "thumbor", "ipx"}
    assert threeway.rotation(["a", "b"], 5) == ["b", "a"]
    assert threeway.rotation([], 2) == []


def row(server: str, round_index: int, rps: float, conn: int = 1) -> dict[str, Any]:
    return {
        "job": "fit512-cold",
        "connections": conn,
        "round": round_index,
        "server": server,
        "rps": rps,
        "server_cpu_ms_per_request": 1000 / rps,
    }


def test_ratios_are_taken_within_a_round_then_summarised() -> None:
    rows = [
        row("focal", 0, 30),
        row("thumbor", 0, 20),  # 1.5
        row("focal", 1, 10),
        row("thumbor", 1, 10),  # 1.0 (a slow round for both)
        row("focal", 2, 40),
        row("thumbor", 2, 20),  # 2.0
        row("focal", 0, 50, conn=8),  # no thumbor row at c=8: no ratio
    ]
    found = threeway.paired_ratios(rows, "focal", "thumbor")
    assert found == {("fit512-cold", 1): {"min": 1.0, "median": 1.5, "max": 2.0, "n": 3}}


def test_summary_compares_every_focal_configuration_with_the_peers_and_the_baseline() -> None:
    rows = [row("focal", 0, 20), row("focal-w2", 0, 30), row("thumbor", 0, 10), row("ipx", 0, 40)]
    found = {(s["server"], s["against"]): s for s in threeway.summary(rows, ["focal", "focal-w2"])}
    assert set(found) == {
        ("focal", "thumbor"),
        ("focal", "ipx"),
        ("focal-w2", "thumbor"),
        ("focal-w2", "ipx"),
        ("focal-w2", "focal"),
    }
    assert found[("focal-w2", "focal")]["rps_ratio"]["median"] == 1.5
    assert found[("focal", "ipx")]["cpu_ratio"]["median"] == 2.0  # twice ipx's CPU per request


def test_focal_configurations_parse_flags_and_environment() -> None:
    name, flags, env = threeway.parse_focal("je=--workers 2 env:LD_PRELOAD=/x/libjemalloc.so.2")
    assert (name, flags, env) == ("je", ["--workers", "2"], {"LD_PRELOAD": "/x/libjemalloc.so.2"})
    assert threeway.focal_named("focal") == "focal"
    assert threeway.focal_named("je") == "focal-je"
