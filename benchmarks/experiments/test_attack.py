"""The attack script's smoke form against a real ``focal serve`` on loopback (under two
minutes): hostile origin codings and drips, 1,100 connections that never finish a request under
a soft open-file limit of 1,024, request heads past the limits; then the cache disk failing and
every path around redaction.

.venv/bin/pytest benchmarks/experiments/test_attack.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("attack.py")
FAMILIES = ("encodings", "drip", "sockets", "heads")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_quick_attack_is_refused_and_healthz_keeps_answering(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(out)]
    command += [arg for family in FAMILIES for arg in ("--family", family)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    for row in result["encodings"]["rows"]:
        assert row["status"] == 502 and "Content-Encoding" in row["detail"], row
        assert row["rss_growth_mib"] < 100, row
    (drip,) = result["drip"]["rows"]
    assert drip["status"] == 502 and "in all" in drip["detail"]

    sockets = result["sockets"]
    assert sum(c["count"] for c in sockets["closed"].values()) == 1100
    assert sockets["healthz"]["probes"] > 0 and sockets["healthz"]["failed"] == 0

    answers = {row["attack"]: row["answer"] for row in result["heads"]["rows"]}
    assert answers["url"].startswith("HTTP/1.1 414")
    assert answers["headers"].startswith("HTTP/1.1 431")
    assert answers["count"].startswith("HTTP/1.1 431")
    for row in result["heads"]["rows"]:
        assert row["rss_growth_mib"] < 50, row
    assert result["heads"]["health"]["failures"] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_quick_disk_and_redaction_attacks_find_no_failure_and_no_face(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(out)]
    command += ["--family", "disk", "--family", "redaction"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    cases = {case: row for case, row in result["disk"].items() if isinstance(row, dict)}
    assert {"vanished", "replaced"} <= set(cases)
    for case, row in cases.items():
        assert row["requests"] > 0 and row["not_200"] == 0, (case, row)
    redaction = result["redaction"]
    assert len(redaction["tries"]) >= 10
    assert redaction["bypasses"] == 0, redaction["tries"]
