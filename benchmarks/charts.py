"""Charts (PNG, docs/img/) from benchmarks/results/*.json. Needs matplotlib, which lives in the
benchmarks' own virtual environment:

    benchmarks/work/venv/bin/python benchmarks/charts.py

Only the standard library and matplotlib are imported here (this runs outside the project's
environment).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"
FOCAL = "#1f77b4"
THUMBOR = "#ff7f0e"
IPX = "#2ca02c"
METHOD_COLOURS = {
    "center": "#9e9e9e",
    "libvips": "#8c564b",
    "focal-auto": "#bcbd22",
    "thumbor": "#ff7f0e",
    "thumbor-feature": "#ffbb78",
    "focal-face": "#1f77b4",
    "oracle": "#2ca02c",
}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def crop_quality(data: dict[str, Any]) -> Path:
    summary = data["summary"]
    aspects = list(summary)
    methods = [m for m in METHOD_COLOURS if any(m in summary[a]["methods"] for a in aspects)]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [
            100 * (summary[a]["methods"].get(method, {}).get("all_kept_share") or 0)
            for a in aspects
        ]
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(aspects))]
        bars = ax.bar(xs, values, width, label=data["labels"][method], color=METHOD_COLOURS[method])
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.axhline(97, color="#444", linestyle="--", linewidth=0.8)
    ax.text(-0.45, 97.5, "goal 97%", ha="left", va="bottom", fontsize=8)
    ax.set_xticks(range(len(aspects)), [f"{a} ({summary[a]['possible']} images)" for a in aspects])
    ax.set_ylabel("images with every face kept (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Crop quality on ../shared/facedata: largest crop of each aspect ratio")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return save(fig, "crop_quality.png")


def throughput(data: dict[str, Any]) -> Path:
    cells = data["cells"]
    modes = sorted({c["mode"] for c in cells}, key=["cold", "warm"].index)
    ops = list(dict.fromkeys(c["op"] for c in cells))
    conns = sorted({c["connections"] for c in cells})
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        labels, focal, thumbor = [], [], []
        for op in ops:
            for conn in conns:
                row = {
                    c["server"]: c["rps"]
                    for c in cells
                    if (c["mode"], c["op"], c["connections"]) == (mode, op, conn)
                }
                labels.append(f"{op}\nc={conn}")
                focal.append(row.get("focal", 0))
                thumbor.append(row.get("thumbor", 0))
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], focal, 0.4, label="focal", color=FOCAL)
        ax.bar([x + 0.2 for x in xs], thumbor, 0.4, label="thumbor 7.8", color=THUMBOR)
        ax.set_xticks(list(xs), labels, fontsize=6.5)
        ax.set_ylabel("requests/s")
        ax.set_title(
            f"{mode}: " + ("no caches" if mode == "cold" else "cached variants"), fontsize=10
        )
        ax.legend(fontsize=8)
    fig.suptitle("Throughput on this machine (higher is better)")
    return save(fig, "throughput.png")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def threeway(data: dict[str, Any]) -> Path:
    """Median req/s per cell and server, with the rounds' min and max as whiskers; one panel
    per job (their scales differ by orders of magnitude)."""
    rows = data["rows"]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    jobs = list(dict.fromkeys(r["job"] for r in rows))
    blues = ["#1f77b4", "#6baed6", "#08306b", "#9ecae1"]
    focal = [n for n in servers if n.startswith("focal")]
    colours = {"thumbor": THUMBOR, "ipx": IPX} | {n: blues[i % 4] for i, n in enumerate(focal)}
    fig, axes = plt.subplots(1, len(jobs), figsize=(4.2 * len(jobs), 4), squeeze=False)
    for ax, job in zip(axes[0], jobs, strict=True):
        conns = sorted({r["connections"] for r in rows if r["job"] == job})
        here = [n for n in servers if any(r["server"] == n and r["job"] == job for r in rows)]
        width = 0.8 / len(here)
        for i, server in enumerate(here):
            medians, low, high, xs = [], [], [], []
            for j, conn in enumerate(conns):
                values = [
                    r["rps"]
                    for r in rows
                    if (r["job"], r["connections"], r["server"]) == (job, conn, server)
                ]
                if not values:
                    continue
                mid = _median(values)
                medians.append(mid)
                low.append(mid - min(values))
                high.append(max(values) - mid)
                xs.append(j + (i - (len(here) - 1) / 2) * width)
            ax.bar(
                xs, medians, width, yerr=[low, high], capsize=2, label=server,
                color=colours[server],
            )  # fmt: skip
        ax.set_xticks(range(len(conns)), [f"c={c}" for c in conns])
        ax.set_title(job, fontsize=10)
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=7)
    fig.suptitle(
        "focal, thumbor 7.8 and ipx 3, interleaved: median of rounds, whiskers min-max "
        "(higher is better)",
        fontsize=10,
    )
    return save(fig, "threeway.png")


def memory(data: dict[str, Any]) -> Path:
    samples = data["samples"]
    done = [s[1] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(done, [s[2] / 2**20 for s in samples], label="server", color=FOCAL)
    ax.plot(done, [s[3] / 2**20 for s in samples], label="detector worker", color="#2ca02c")
    ax.set_xlabel("requests answered")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Resident memory over the soak (concurrency {data['setup']['concurrency']})")
    ax.legend(fontsize=8)
    return save(fig, "memory.png")


def save(fig: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    for name, draw in (
        ("crop_quality", crop_quality),
        ("throughput", throughput),
        ("threeway", threeway),
        ("memory", memory),
    ):
        data = load(name)
        if data is None:
            print(f"skipped {name}: no results yet")
            continue
        draw(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
