"""The face-cost benchmark's summary: ratios to the default taken within each round (pure; no
detector runs).

.venv/bin/pytest benchmarks/test_face_cost.py -q
"""

from __future__ import annotations

from typing import Any

import face_cost


def cell(wall: float, cpu: float, detect: float) -> dict[str, Any]:
    return {"wall_ms": wall, "cpu_ms": cpu, "timings": [{"detect": detect}]}


def test_ratios_are_taken_within_each_round_then_summarised() -> None:
    rounds = [
        {"side=1024": cell(200, 400, 150), "side=640": cell(100, 160, 50)},
        {"side=640": cell(120, 240, 60), "side=1024": cell(300, 400, 160)},  # a slower round
        {"side=1024": cell(250, 500, 155), "side=640": cell(100, 250, 55)},
    ]
    summary = face_cost.summarise(rounds)
    small = summary["side=640"]
    # per round: wall 0.5, 0.4, 0.4; cpu 0.4, 0.6, 0.5
    assert small["wall_ratio"] == {"min": 0.4, "median": 0.4, "max": 0.5}
    assert small["cpu_ratio"] == {"min": 0.4, "median": 0.5, "max": 0.6}
    assert small["cpu_ms"] == 240 and small["split_ms"] == {"detect": 55}
    assert summary["side=1024"]["cpu_ratio"] == {"min": 1.0, "median": 1.0, "max": 1.0}


def test_every_side_is_measured_beside_the_spinning_default() -> None:
    configs = face_cost.configurations([1024, 768])
    assert [(c.name, c.max_side, c.spinning, c.threads, c.face_crop_side) for c in configs] == [
        ("side=1024", 1024, False, 0, "cap"),
        ("side=768", 768, False, 0, "cap"),
        ("1024 side by output", 1024, False, 0, "output"),
        ("1024 spinning", 1024, True, 0, "cap"),
        ("1024 1 thread", 1024, False, 1, "cap"),
    ]
    assert [c.name for c in face_cost.configurations([1024], threads=False)] == [
        "side=1024",
        "1024 side by output",
    ]
