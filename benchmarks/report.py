# ruff: noqa: E501  (markdown templates read better unwrapped)
"""Write docs/benchmarks.md from benchmarks/results/*.json (every number in it comes from those
files, each made by the command named next to its table).

    .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"

# SPEC section 5: measured earlier with the same metric (share of images with every face kept).
ANCHORS = {
    "center": (71, 81, 65),
    "libvips": (66, 66, 71),
    "thumbor": (79, 85, 84),
    "plain RetinaFace outer-box crop (1024 cap)": (92.5, 92, 97),
}
FACE_GOAL = 0.97
MARGIN_GOAL = 0.20

INTRO = """\
# Benchmarks

focal measured side by side with [thumbor](https://github.com/thumbor/thumbor) 7.8 (installed
from PyPI and run here, on the same machine, on 127.0.0.1), with
[ipx](https://github.com/unjs/ipx) 3, the sharp-based image server of Nuxt Image (installed from
npm, section 2b), and with libvips itself, the floor of what decoding, resizing and encoding
cost. One command runs everything, installs what it needs (Debian's `wrk`, `libvips-tools`,
node and npm; thumbor, `opencv-python-headless<5` for thumbor's face detector, matplotlib and
py-spy in a separate virtual environment under `benchmarks/work/`; ipx under
`benchmarks/work/ipx`), and writes
the JSON files under `benchmarks/results/`, the charts under `docs/img/` and this page:

```
.venv/bin/python benchmarks/run_all.py          # about 30 minutes on 2 cores
.venv/bin/python benchmarks/run_all.py --only threeway   # the three-way run alone, about 11 minutes
.venv/bin/python benchmarks/run_all.py --quick  # smoke run, a few minutes, writes nothing
```

Each section names the script that made its numbers; each script also runs alone. The inputs are
made from the bundled demo images (`benchmarks/prepare.py`: 2400 px JPEGs, portraits and group
photos, PNGs with alpha, an animated GIF) and, for crop quality, the labelled photos of
`../shared/facedata`, read in place (never copied).

The one-off experiments (sections 2d and 7, the profiles in the notes below, and the numbers
other pages quote) live in `benchmarks/experiments/` and write to the same `benchmarks/results/`;
[benchmarks/README.md](../benchmarks/README.md) lists both kinds of script.

Timings depend on the machine and on what else runs on it: the load generator shares the cores
with the servers, and the load average at the time is not controlled. Compare ratios measured in
the same run, not absolute numbers across machines.
"""


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_table(results: dict[str, dict[str, Any]]) -> str:
    first = max(results.values(), key=lambda r: str(r["machine"]["date"]))["machine"]
    rows = [
        ["CPU", f"{first['cpu']}, {first['cores']} cores, {first['memory_gib']} GiB"],
        ["OS", first["os"]],
        ["Python", first["python"]],
        ["focal", f"{first['focal']} (commit {first['git_commit']})"],
        [
            "libvips",
            f"{first['libvips_pyvips']} (pyvips-binary); vipsthumbnail {first['libvips_debian']}",
        ],
        [
            "thumbor",
            f"{first['thumbor']} (opencv-python-headless {first['opencv_thumbor']}, Pillow {first['pillow_thumbor']})",
        ],
        ["load generator", first["wrk"]],
    ]
    dates = [
        [name, r["machine"]["date"], r["machine"]["cpu"], f"`{r['command']}`"]
        for name, r in results.items()
    ]
    return (
        "## Machine and versions\n\nThe machine of the latest result:\n\n"
        + table(["", ""], rows)
        + "\n\nThe results were not all measured on the same machine; compare ratios within one "
        "result, which are always taken between servers of the same run.\n\n"
        + table(["result", "measured", "CPU", "command"], dates)
        + "\n"
    )


def crop_section(data: dict[str, Any]) -> str:
    summary = data["summary"]
    aspects = list(summary)
    labels = data["labels"]
    rows = []
    for method in labels:
        cells = []
        for aspect in aspects:
            row = summary[aspect]["methods"].get(method)
            cells.append(
                "n/a"
                if row is None
                else f"{pct(row['all_kept_share'])} ({pct(row['faces_kept_share'])})"
            )
        rows.append([labels[method], *cells])
    possible = ", ".join(
        f"{a}: {summary[a]['possible']} of {summary[a]['images']}" for a in aspects
    )
    anchor_rows = [[name, *[f"{v}%" for v in values]] for name, values in ANCHORS.items()]
    text = [
        "## 1. Crop quality\n",
        f"`{data['command']}` ({data['seconds']:.0f} s)\n",
        "Every image of `../shared/facedata` with at least one labelled face "
        f"({data['definition']['faces']}); {data['definition']['crop']}; a face is kept with "
        f"{data['definition']['kept']}. Each cell: share of images where every face was kept, among "
        f"the images where the oracle keeps them all ({possible}); in brackets, the share of all "
        "faces kept. focal's crop is read from its own JSON description "
        "(`focal.pipeline.transform`, `format=json,fit=cover,gravity=face,zoom=0`, the crop size "
        "as width and height, so nothing is scaled); thumbor's from `/unsafe/meta/WxH/smart/PATH`; "
        "libvips' by finding the `smartcrop(interesting=attention)` result in the source.\n",
        table(["method", *aspects], rows),
        "",
        "![crop quality](img/crop_quality.png)\n",
        "For comparison, the figures SPEC section 5 quotes for the same metric:\n",
        table(["method (SPEC)", *aspects], anchor_rows),
        "",
        crop_verdict(summary),
        failure_table(data.get("focal_face_failures") or {}),
        flip_table(data.get("flips") or {}),
    ]
    if data.get("notes"):
        text.append("Notes: " + "; ".join(f"{k}: {v}" for k, v in data["notes"].items()) + ".\n")
    if data.get("errors"):
        text.append(
            "Errors met (first per method): "
            + "; ".join(f"{k}: {v}" for k, v in data["errors"].items())
            + "\n"
        )
    return "\n".join(text)


def failure_table(found: dict[str, Any]) -> str:
    """Why gravity=face lost faces that a better placement would have kept."""
    if not found:
        return ""
    causes = sorted({c for block in found.values() for c in block["causes"]})
    rows = [[cause, *[found[a]["causes"].get(cause, 0) for a in found]] for cause in causes]
    rows.append(["images lost in all", *[len(found[a]["cases"]) for a in found]])
    return (
        "Where gravity=face lost a face that the best placement keeps, the cause (a labelled face "
        "matches a detection at IoU >= 0.3; `focal_face_failures` in the JSON lists every case):\n\n"
        + table(["cause", *found], rows)
        + "\n"
    )


def _names(paths: Sequence[str]) -> str:
    return ", ".join(Path(p).stem for p in paths) if paths else "none"


def flip_table(flips: dict[str, Any]) -> str:
    """The images whose all-faces-kept outcome flipped for gravity=face: against the published
    placement alone (same detections) and against the result saved before this run."""
    if not flips:
        return ""
    rows = []
    for aspect, block in flips["against_published"].items():
        rows.append(["published placement alone", aspect, _names(block["kept_to_lost"]),
                     _names(block["lost_to_kept"])])  # fmt: skip
    saved = flips.get("against_saved") or {}
    for aspect, block in (saved.get("methods", {}).get(flips["method"]) or {}).items():
        rows.append([f"saved result ({saved.get('measured')}, commit {saved.get('commit')})",
                     aspect, _names(block["kept_to_lost"]), _names(block["lost_to_kept"])])  # fmt: skip
    return (
        "Images whose outcome (every face kept or not) flipped for focal gravity=face "
        "(`flips` in the JSON; a regression shows here even when the total rises):\n\n"
        + table(["against", "aspect", "kept -> lost", "lost -> kept"], rows)
        + "\n"
    )


def crop_verdict(summary: dict[str, Any]) -> str:
    lines = [
        f"Goal: gravity=face keeps every face in at least {FACE_GOAL:.0%} of those images for each "
        f"aspect ratio, and beats center and gravity=auto by at least {100 * MARGIN_GOAL:.0f} points.\n"
    ]
    for aspect, block in summary.items():
        methods = block["methods"]
        face = (methods.get("focal-face") or {}).get("all_kept_share")
        if face is None:
            lines.append(f"- {aspect}: focal gravity=face was not measured.")
            continue
        others = {
            name: (methods.get(key) or {}).get("all_kept_share")
            for key, name in (
                ("center", "center"),
                ("libvips", "libvips attention"),
                ("focal-auto", "focal gravity=auto"),
            )
        }
        margins = ", ".join(
            f"{100 * (face - v):+.1f} points over {n}" for n, v in others.items() if v is not None
        )
        met = face >= FACE_GOAL and all(
            face - v >= MARGIN_GOAL for v in others.values() if v is not None
        )
        lines.append(f"- {aspect}: {pct(face)}, {margins}: **{'met' if met else 'missed'}**.")
    return "\n".join(lines) + "\n"


def throughput_section(data: dict[str, Any]) -> str:
    setup = data["setup"]
    text = [
        "## 2. Throughput and latency against thumbor\n",
        f"`{data['command']}` ({data['seconds']:.0f} s; {setup['seconds_per_cell']:.0f} s per cell, "
        f"load generator {setup['load_generator']}, runs alternating between the servers)\n",
        f"- thumbor: {setup['thumbor']}",
        f"- focal: {setup['focal']}",
        "- operations: "
        + "; ".join(f"`{k}` {v['describe']}" for k, v in setup["operations"].items()),
        "- sources: "
        + ", ".join(sorted({s for v in setup["inputs"].values() for s in v}))
        + " (under `benchmarks/work/inputs/`)\n",
    ]
    cells = data["cells"]
    for mode in ("cold", "warm"):
        rows = []
        for ratio in [r for r in data["ratios"] if r["mode"] == mode]:
            f = _cell(cells, mode, ratio["op"], ratio["connections"], "focal")
            t = _cell(cells, mode, ratio["op"], ratio["connections"], "thumbor")
            rows.append(
                [
                    ratio["op"],
                    ratio["connections"],
                    f"{f['rps']:.1f}",
                    f"{t['rps']:.1f}",
                    f"**{ratio['rps_ratio']:.2f}x**",
                    f"{f['p50_ms']:.0f} / {f['p95_ms']:.0f} / {f['p99_ms']:.0f}",
                    f"{t['p50_ms']:.0f} / {t['p95_ms']:.0f} / {t['p99_ms']:.0f}",
                    f"{f['server_cpu_ms_per_request']} / {t['server_cpu_ms_per_request']}",
                    f"{f['errors']} / {t['errors']}",
                ]
            )
        if not rows:
            continue
        title = (
            "Cold (no caches: every request decodes, detects, resizes, encodes)"
            if mode == "cold"
            else "Warm (the variant is cached)"
        )
        text += [
            f"### {title}\n",
            table(
                [
                    "operation",
                    "conc.",
                    "focal req/s",
                    "thumbor req/s",
                    "focal / thumbor",
                    "focal p50/p95/p99 ms",
                    "thumbor p50/p95/p99 ms",
                    "server CPU ms/req (focal / thumbor)",
                    "errors",
                ],
                rows,
            ),
            "",
            f"Median focal / thumbor requests/s over these cells: **{_median([r['rps_ratio'] for r in data['ratios'] if r['mode'] == mode]):.2f}x**.\n",
        ]
    text.append("![throughput](img/throughput.png)\n")
    return "\n".join(text)


def _spread_text(spread: dict[str, float] | None) -> str:
    if not spread:
        return "n/a"
    return f"{spread['min']:.2f} / **{spread['median']:.2f}** / {spread['max']:.2f}"


def _median_of(rows: Sequence[dict[str, Any]], key: str) -> str:
    # a CPU time of 0 or less: a child process was replaced during the run and took its CPU
    # time with it (threeway.py now records None there)
    values = [r[key] for r in rows if r.get(key) is not None and r[key] > 0]
    return f"{_median(values):.1f}" if values else "n/a"


THREEWAY_TITLES = {
    "threeway": "## 2b. Three-way: focal, thumbor and ipx",
    "threeway_face": "## 2e. Face crops against thumbor, per detection side",
    "warm_hops": "## 2f. Cached variants: one trip to a thread instead of two",
    "warm_memory": "## 2g. Cached variants: the in-memory tier",
    "threeway_face_bf16": "## 2h. Face crops with the detector in bf16 (opt-in)",
    "threeway_threads": "## 2i. Image threads per worker: cold resizes",
    "threeway_threads_face": "## 2j. Image threads per worker: face crops and cached variants",
    "threeway_workers_threads": "## 2k. Two workers, one or two image threads each: cold resizes",
    "threeway_workers_threads_face": "## 2l. Two workers, one or two image threads each: face crops",
    "threeway_face_skip": "## 2m. Face crops that no face can move: not detected",
}


def threeway_section(data: dict[str, Any]) -> str:
    """A benchmarks/threeway.py result: per cell, median req/s of every server, the ratios
    taken within each round (min / median / max) and the servers' CPU time per request."""
    setup = data["setup"]
    rows_in = data["rows"]
    servers = list(dict.fromkeys(r["server"] for r in rows_in))
    focal = [n for n in servers if n.startswith("focal")]
    others = [n for n in ("thumbor", "ipx") if n in servers]
    title = THREEWAY_TITLES.get(
        data["benchmark"], "## 2c. Serving levers: focal configurations side by side"
    )
    text = [
        f"{title}\n",
        f"`{data['command']}` ({data['seconds']:.0f} s; {setup['rounds']} rounds per cell of "
        f"{setup['seconds_per_measurement']:.0f} s per server, the order rotating each round; "
        f"load generator {setup['load_generator']})\n",
        *(f"- {name}: {setup[name]}" for name in others),
        "- focal: "
        + "; ".join(
            f"`{name}` {' '.join(v['flags']) or '(defaults)'}"
            + (f" with {', '.join(f'{k}={x}' for k, x in v['env'].items())}" if v["env"] else "")
            for name, v in setup["focal"].items()
        ),
        "- jobs: " + "; ".join(f"`{k}` {v['describe']}" for k, v in setup["jobs"].items()) + "\n",
        "Ratios are taken between the runs of one round, then summarised as min / **median** / "
        "max over the rounds; req/s and CPU ms per request are medians over the rounds.\n",
    ]
    summary = data["summary"]
    cells = list(dict.fromkeys((r["job"], r["connections"]) for r in rows_in))
    header = ["job", "conc.", *(f"{n} req/s" for n in servers)]
    pairs = [(s["server"], s["against"]) for s in summary]
    pairs = list(dict.fromkeys(pairs))
    header += [f"{a} / {b}" for a, b in pairs]
    header += ["CPU ms/req (" + " / ".join(servers) + ")"]
    rows = []
    for job, conn in cells:
        here = [r for r in rows_in if (r["job"], r["connections"]) == (job, conn)]
        line: list[Any] = [job, conn]
        for name in servers:
            mine = [r for r in here if r["server"] == name]
            line.append(_median_of(mine, "rps") if mine else "-")
        for a, b in pairs:
            found = next(
                (
                    s
                    for s in summary
                    if (s["job"], s["connections"], s["server"], s["against"]) == (job, conn, a, b)
                ),
                None,
            )
            line.append(_spread_text(found["rps_ratio"]) if found else "-")
        line.append(
            " / ".join(
                _median_of([r for r in here if r["server"] == n], "server_cpu_ms_per_request")
                if any(r["server"] == n for r in here)
                else "-"
                for n in servers
            )
        )
        rows.append(line)
    text.append(table(header, rows))
    text.append("")
    for job in dict.fromkeys(j for j, _ in cells):
        for a, b in pairs:
            medians = [
                s["rps_ratio"]["median"]
                for s in summary
                if (s["job"], s["server"], s["against"]) == (job, a, b) and s["rps_ratio"]
            ]
            if medians and a in focal and b in others + focal:
                text.append(
                    f"- `{job}`: {a} / {b} median over the concurrencies **{_median(medians):.2f}x**"
                )
    text.append("")
    if data["benchmark"] == "threeway":
        text.append("![three-way throughput](img/threeway.png)\n")
    return "\n".join(text)


def _cell(
    cells: Sequence[dict[str, Any]], mode: str, op: str, conn: int, server: str
) -> dict[str, Any]:
    for cell in cells:
        if (cell["mode"], cell["op"], cell["connections"], cell["server"]) == (
            mode,
            op,
            conn,
            server,
        ):
            return cell
    raise KeyError((mode, op, conn, server))


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def jpeg_decode_section(data: dict[str, Any]) -> str:
    rows = [[name, _spread_text(spread)] for name, spread in data["cpu_ms"].items()]
    rows += [[name, _spread_text(spread)] for name, spread in data["ratios"].items()]
    return "\n".join(
        [
            "## 2d. JPEG decode and encode levers, in process\n",
            f"`{data['command']}`: CPU ms per image of the fit-512 job's pieces on "
            + ", ".join(data["sources"])
            + " (min / **median** / max over the rounds; the ratios within each round)\n",
            table(["case", "CPU ms per image, or ratio"], rows),
            "",
        ]
    )


def floor_section(data: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{r['focal_cpu_ms']:.1f}",
            f"{r['libvips_cpu_ms']:.1f}",
            f"**{r['ratio']:.2f}x**",
            f"{r['focal_wall_ms']:.1f} / {r['libvips_wall_ms']:.1f}",
        ]
        for name, r in data["in_process"].items()
    ]
    text = [
        "## 3. Overhead over the libvips floor\n",
        f"`{data['command']}` ({data['seconds']:.0f} s)\n",
        f"CPU time per image (median) on the four 2400 px JPEGs (`anim160-*`: the 24-frame "
        f"animated GIF, every frame kept). In process, the floor is "
        f"{data['floor']['in_process']}; the ratio is focal / floor (goal <= {data['goal_ratio']}x).\n",
        table(
            ["job", "focal CPU ms", "libvips CPU ms", "ratio", "wall ms (focal / libvips)"], rows
        ),
        "",
    ]
    if data["cli"]:
        cli_rows = [
            [
                name,
                f"{r['focal_cpu_ms_per_image']:.1f}",
                f"{r['vipsthumbnail_cpu_ms_per_image']:.1f}",
                f"{r['ratio']:.2f}x",
            ]
            for name, r in data["cli"].items()
        ]
        any_cli = next(iter(data["cli"].values()))
        text += [
            f"Command line: `focal transform FOLDER` against {data['floor']['cli']}, over a folder of "
            f"{any_cli['images']} images (process start-up included, spread over them), median of "
            f"{any_cli['runs']} runs:\n",
            table(
                ["job", "focal transform CPU ms/image", "vipsthumbnail CPU ms/image", "ratio"],
                cli_rows,
            ),
            "",
        ]
    goal = data["goal_ratio"]
    over = {n: r["ratio"] for n, r in data["in_process"].items() if r["ratio"] > goal}
    under = [n for n in data["in_process"] if n not in over]
    verdict = f"In process, goal (<= {goal}x) **met** for {', '.join(under) or 'no job'}"
    if over:
        verdict += ", **missed** for " + ", ".join(f"{n} ({v:.2f}x)" for n, v in over.items())
    text.append(verdict + ".\n")
    return "\n".join(text)


def breakdown_section(data: dict[str, Any]) -> str:
    cold = data["in_process"]["cold"]["median_ms"]
    cached = data["in_process"]["detection_cached"]["median_ms"]
    stages = [
        s for s in ("decode", "detect", "process", "encode", "total") if s in cold or s in cached
    ]
    rows = [[s, f"{cold.get(s, 0):.1f}", f"{cached.get(s, 0):.1f}"] for s in stages]
    server = data["server"]
    return "\n".join(
        [
            "## 4. Face-crop cost, stage by stage\n",
            f"`{data['command']}` ({data['seconds']:.0f} s)\n",
            f"{data['source']} to `{data['options']}`; detector {data['detector']['model_id']} on "
            f"{data['detector']['runtime']}. Medians of {data['in_process']['cold']['runs']} runs of "
            "`focal.pipeline.transform`, from `Result.timings` (decode includes the inference copy's "
            "decode at the 1024 cap):\n",
            table(["stage", "cold ms", "detection cached ms"], rows),
            "",
            f"Through the server (one request at a time, variant cache off; the detector in its own "
            f"worker process): cold **{server['cold']['median_ms']:.0f} ms** median "
            f"(p95 {server['cold']['p95_ms']:.0f}), detection cached "
            f"**{server['detection_cached']['median_ms']:.0f} ms** (p95 {server['detection_cached']['p95_ms']:.0f}).\n",
        ]
    )


SIDE_QUALITY = "crop_quality_side_{side}"  # benchmarks/crop_quality.py --max-side S --out ...
SIDES_AP = RESULTS / "widerface_sides.json"  # focal eval widerface --max-side S ... --out ...


def _side_quality(side: int) -> str:
    """gravity=face's all-kept shares at one detection side, from its crop-quality run."""
    data = harness.read_result("crop_quality" if side == 1024 else SIDE_QUALITY.format(side=side))
    if data is None:
        return "-"
    shares = [
        block["methods"].get("focal-face", {}).get("all_kept_share")
        for block in data["summary"].values()
    ]
    return " / ".join(pct(s) for s in shares)


def _side_accuracy() -> dict[int, tuple[str, str]]:
    """Per detection side: WIDER FACE AP easy / medium / hard, and negatives with a face at the
    crop threshold (0.3), from `focal eval widerface --max-side ... --sweep 0.3`."""
    if not SIDES_AP.exists():
        return {}
    found: dict[int, tuple[str, str]] = {}
    for setting in json.loads(SIDES_AP.read_text())["settings"]:
        ap = setting["wider"]["ap"]
        sweep = {row["threshold"]: row for row in setting.get("sweep", [])}
        at = sweep.get(0.3)
        negatives = (
            "-"
            if at is None
            else f"{len(at['negatives_with_detections'])} of {at['negative_images']}"
        )
        found[setting["max_side"]] = (
            f"{ap['easy']:.2f} / {ap['medium']:.2f} / {ap['hard']:.2f}",
            negatives,
        )
    return found


def face_cost_section(data: dict[str, Any]) -> str:
    summary = data["summary"]
    accuracy = _side_accuracy()
    rows = []
    for name, row in summary.items():
        config = data["configurations"][name]
        side = config["max_side"]
        quality, (ap, negatives) = "-", ("-", "-")
        if not config["spinning"]:
            quality, (ap, negatives) = _side_quality(side), accuracy.get(side, ("-", "-"))
        rows.append(
            [
                name,
                f"{row['wall_ms']:.1f} ({row['wall_ratio']['median']:.2f})",
                f"{row['cpu_ms']:.1f} ({row['cpu_ratio']['median']:.2f}; "
                f"{row['cpu_ratio']['min']:.2f}-{row['cpu_ratio']['max']:.2f})",
                f"{row['split_ms'].get('detect', 0):.1f}",
                quality,
                ap,
                negatives,
            ]
        )
    header = [
        "configuration",
        "wall ms per crop (x default)",
        "CPU ms per crop (x default; min-max)",
        "detect ms",
        "all faces kept 1:1 / 4:5 / 16:9",
        "WIDER AP easy / medium / hard",
        "negatives with a face at 0.3",
    ]
    return "\n".join(
        [
            "## 4b. Face-crop cost per detector configuration\n",
            f"`{data['command']}` ({data['seconds']:.0f} s; {data['rounds']} rounds, the order "
            "rotating each round)\n",
            f"Every JPEG of benchmarks/work/inputs/face/ ({len(data['sources'])} portraits and group "
            f"photos) to `{data['job']}` through `focal.pipeline.transform`, {data['detector']}. "
            "CPU time is the process's own, every thread included: what a busy server pays per "
            "crop. Ratios are to `side=1024` (the default) within each round. Crop quality per side: "
            "`.venv/bin/python benchmarks/crop_quality.py --skip-thumbor --methods focal-face,center "
            "--max-side S --out crop_quality_side_S` (section 1's run for 1024); AP and negatives: "
            "`.venv/bin/focal eval widerface --data ../shared/facedata --max-side 1024 --max-side 896 "
            "--max-side 768 --max-side 640 --max-side 512 --sweep 0.3 --out "
            "benchmarks/results/widerface_sides.json`.\n",
            table(header, rows),
            "",
        ]
    )


def memory_section(data: dict[str, Any]) -> str:
    rows = []
    for name, r in data["summary"].items():
        rows.append(
            [
                name.replace("_", " "),
                r["peak_mib"],
                r["steady_first_1000_mib"],
                r["steady_last_1000_mib"],
                f"{r['growth_mib']:+.1f} MiB ({pct(r['growth_share'])})",
                "met" if r["goal_met"] else "**missed**",
            ]
        )
    load = data["load"]
    setup = data["setup"]
    return "\n".join(
        [
            "## 5. Memory over a soak\n",
            f"`{data['command']}`\n",
            f"{load['requests']} requests (asked: {setup['requests_asked']}, stopping after "
            f"{setup['max_seconds']:.0f} s at most) at concurrency {setup['concurrency']} over "
            f"{len(setup['urls'])} mixed URLs, in {load['seconds']:.0f} s ({load['rps']:.1f} req/s, "
            f"p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms); statuses {data['statuses']}. "
            f"Server: {setup['server']}. Goal: {setup['goal']}.\n",
            table(
                [
                    "process",
                    "peak MiB",
                    "steady, first 1000 MiB",
                    "steady, last 1000 MiB",
                    "growth",
                    "goal",
                ],
                rows,
            ),
            "",
            "![memory](img/memory.png)\n",
        ]
    )


def startup_section(data: dict[str, Any]) -> str:
    rows = [
        [
            f"`{r['command']}`",
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f} / {r['max_s']:.3f}",
            f"{r['overhead_over_vipsthumbnail_s']:+.3f}",
        ]
        for r in data["rows"]
    ]
    worst = max(
        r["overhead_over_vipsthumbnail_s"] for r in data["rows"] if r["command"].startswith("focal")
    )
    verdict = "**met**" if worst <= 0.3 else "**missed**"
    return "\n".join(
        [
            "## 6. Start-up of the command line\n",
            "`.venv/bin/python benchmarks/startup.py`\n",
            f"Wall time of one command, median of {data['repeat']} interleaved runs, against "
            "Debian's `vipsthumbnail` doing the same one-file job (fit 256 px, JPEG).\n",
            table(["command", "median s", "min / max s", "over vipsthumbnail s"], rows),
            "",
            f"Goal (at most 0.3 s over vipsthumbnail) {verdict}: focal's largest overhead is "
            f"{worst:.3f} s.\n",
        ]
    )


def detector_service_section(data: dict[str, Any]) -> str:
    wire = [
        [r["format"], f"{r['bytes']:,}", f"{r['encode_ms']:.2f}", f"{r['decode_ms']:.2f}"]
        for r in data["wire_formats"]
    ]
    crops = []
    for key, name in (("own_pool", "own detector pool"), ("service", "detector service")):
        r = data[key]
        crops.append(
            [
                name,
                f"{r['latency_ms_p50']:.0f}",
                f"{r['latency_ms_p90']:.0f}",
                f"{r['host_cpu_ms_per_crop']:.0f}",
                f"{r['service_cpu_ms_per_crop']:.0f}",
            ]
        )
    o, m, p = data["overhead"], data["memory_service_client"], data["memory_own_pool"]
    verdict = (
        "**met**" if m["vmhwm_mib"] <= 150 and not m["inference_runtime_loaded"] else ("**missed**")
    )
    return "\n".join(
        [
            "## 7. The shared face detector service\n",
            f"`{data['command']}`\n",
            "One machine (2 cores, shared with other work while it ran): the detector service "
            "(`focal detector serve`, a local Ray, one replica), one `focal serve` with its own "
            "detector pool and one with `detector_url` set; variant and detection caches off, so "
            f"every request detects. {data['own_pool']['crops']} distinct WIDER FACE photos, "
            "one face crop at a time to each instance. Image host CPU: the focal serve process "
            "and its children (the pool's detector process); service CPU: every process of the "
            "service, Ray's own included (idle, they took "
            f"{data['service_idle_cpu_ms_per_s']:.0f} ms of CPU per second).\n",
            table(
                [
                    "per face crop",
                    "latency p50 ms",
                    "p90 ms",
                    "image host CPU ms",
                    "service CPU ms",
                ],
                crops,
            ),
            "",
            f"The service's overhead per detection over the same detector called in the "
            f"process, one image at a time, in turn ({o['images']} capped images): "
            f"{o['overhead_ms_p50']:.1f} ms at the median of the differences (p90 "
            f"{o['overhead_ms_p90']:.1f} ms); direct {o['direct_ms_p50']:.0f} ms, through the "
            f"service {o['service_ms_p50']:.0f} ms.\n",
            f"The image host with `detector_url` after {m['requests']} face crops, 4 at a "
            f"time: VmRSS {m['vmrss_mib']:.0f} MiB, VmHWM {m['vmhwm_mib']:.0f} MiB, no "
            f"inference runtime mapped: {not m['inference_runtime_loaded']}. Goal (at most 150 "
            f"MiB, no model in the image process) {verdict}. With its own pool: the server "
            f"{p['vmrss_mib']:.0f} MiB and its detector process {p['pool_rss_mib']:.0f} MiB.\n",
            "Wire formats of one capped image (CPU ms, median of 7; JSON of 3):\n",
            table(["format", "bytes", "encode ms", "decode ms"], wire),
            "",
        ]
    )


STEP_OF = {"face_crop_breakdown": "breakdown"}
# studies run by hand (each result names its command): left out of the page until measured
OPTIONAL = {
    "levers",
    "jpeg_decode",
    "threeway_face",
    "warm_hops",
    "warm_memory",
    "threeway_face_bf16",
    "threeway_threads",
    "threeway_threads_face",
    "threeway_workers_threads",
    "threeway_workers_threads_face",
    "threeway_face_skip",
    "detector_service",
}
SECTIONS = (
    ("crop_quality", crop_section),
    ("throughput", throughput_section),
    ("threeway", threeway_section),
    ("levers", threeway_section),
    ("jpeg_decode", jpeg_decode_section),
    ("threeway_face", threeway_section),
    ("warm_hops", threeway_section),
    ("warm_memory", threeway_section),
    ("threeway_face_bf16", threeway_section),
    ("threeway_threads", threeway_section),
    ("threeway_threads_face", threeway_section),
    ("threeway_workers_threads", threeway_section),
    ("threeway_workers_threads_face", threeway_section),
    ("threeway_face_skip", threeway_section),
    ("floor", floor_section),
    ("face_crop_breakdown", breakdown_section),
    ("face_cost", face_cost_section),
    ("memory", memory_section),
    ("startup", startup_section),
    ("detector_service", detector_service_section),
)


def render() -> str:
    results = {
        name: data for name, _ in SECTIONS if (data := harness.read_result(name)) is not None
    }
    parts = [INTRO]
    if results:
        parts.append(machine_table(results))
    for name, section in SECTIONS:
        if name in results:
            parts.append(section(results[name]))
        elif name not in OPTIONAL:
            parts.append(
                f"## {name}\n\nNot measured yet: run `.venv/bin/python benchmarks/run_all.py --only {STEP_OF.get(name, name)}`.\n"
            )
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text())
    return "\n".join(parts)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
