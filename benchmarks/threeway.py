"""focal against thumbor 7.8 and ipx 3 (the sharp-based image server Nuxt Image uses), all run
here on 127.0.0.1, interleaved so that every ratio compares runs made moments apart.

Jobs (each on the same source files under benchmarks/work/inputs/):

    fit512-cold   resize to fit 512x512, JPEG q80, no caches on any server   focal, thumbor, ipx
    fit512-warm   the same, variants cached (every URL asked once first)   focal, thumbor
    face256-cold  face crop 256x256, JPEG q80, no caches          focal, thumbor smart + faces
    face4x5-cold  face crop 256x320 (4:5), JPEG q80, no caches    focal, thumbor smart + faces

The two face jobs differ in one way: two of the four face sources are square, and a 256x256
crop of a square is the whole image, where no face can move the crop and focal does not detect
(docs/detector.md); at 4:5 every crop of every source has room to move, so every request detects.

ipx keeps no transformed images (it has no result cache) and has no face detection, so it is
in the cold resize only. Cold: focal with --no-cache-enabled --detection-cache-entries 0;
thumbor with no storage and no result storage; ipx with sharp's libvips operation cache off.

Each cell (job, concurrency) is measured in ``--rounds`` rounds; a round measures every server
once, the order rotating from round to round (A B C, B C A, C A B), so drift on the shared
cores falls on every server alike. The ratio focal / other is taken within each round, and the
result reports its min / median / max over the rounds.

Extra focal configurations run in the same rotation with ``--focal NAME=FLAGS`` (flags of
``focal serve``; ``env:KEY=VALUE`` sets an environment variable; the name ``focal`` sets the
flags of the baseline, against which the others are also compared), e.g.
``--focal "w2=--workers 2"`` or
``--focal "jemalloc=env:LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"``.

    .venv/bin/python benchmarks/threeway.py [--seconds 5] [--rounds 3] [--concurrency 1,2,8]

ipx comes from npm into benchmarks/work/ipx (``npm install --prefix benchmarks/work/ipx ipx@3``,
done here when missing; sharp brings its prebuilt libvips). thumbor: benchmarks/run_all.py's
virtual environment.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import prepare
import throughput

COMMAND = ".venv/bin/python benchmarks/threeway.py"
IPX_PREFIX = harness.WORK / "ipx"
IPX_MODULES = IPX_PREFIX / "node_modules"
IPX_PACKAGE = "ipx@3"
IPX_SCRIPT = harness.BENCH / "ipx_server.cjs"
THUMBOR_PROCESSES = throughput.THUMBOR_PROCESSES


@dataclass(frozen=True)
class Job:
    name: str
    mode: str  # cold or warm
    folder: str
    focal: str
    thumbor: str
    ipx: str | None  # None: ipx cannot do this job
    describe: str


FIT = "width=512,height=512,fit=scale-down,format=jpeg,quality=80,metadata=none"
FACE = "width=256,height=256,fit=cover,gravity=face,format=jpeg,quality=80,metadata=none"
FACE_4X5 = "width=256,height=320,fit=cover,gravity=face,format=jpeg,quality=80,metadata=none"
JOBS = (
    Job(
        "fit512-cold",
        "cold",
        "large",
        FIT,
        "fit-in/512x512/filters:quality(80)",
        "s_512x512,fit_inside,q_80,f_jpeg",
        "resize to fit 512x512, JPEG q80, no caches",
    ),
    Job(
        "fit512-warm",
        "warm",
        "large",
        FIT,
        "fit-in/512x512/filters:quality(80)",
        None,
        "resize to fit 512x512, JPEG q80, variant cached",
    ),
    Job(
        "face256-cold",
        "cold",
        "face",
        FACE,
        "256x256/smart/filters:quality(80)",
        None,
        "face crop 256x256, JPEG q80, no caches (thumbor: smart with its face detector)",
    ),
    Job(
        "face4x5-cold",
        "cold",
        "face",
        FACE_4X5,
        "256x320/smart/filters:quality(80)",
        None,
        "face crop 256x320 (4:5: every crop can move), JPEG q80, no caches (thumbor: smart)",
    ),
)


# --- the interleaving and the ratios (pure; tests/test_benchmark_threeway.py) ---------------


def rotation(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: ``names`` rotated left by that many places."""
    if not names:
        return []
    k = round_index % len(names)
    return [*names[k:], *names[:k]]


def schedule(names: Sequence[str], rounds: int) -> list[list[str]]:
    return [rotation(names, r) for r in range(rounds)]


def spread(values: Iterable[float]) -> dict[str, float] | None:
    """min / median / max of some ratios (None when there are none)."""
    found = sorted(values)
    if not found:
        return None
    return {
        "min": round(found[0], 3),
        "median": round(harness.median(found), 3),
        "max": round(found[-1], 3),
        "n": len(found),
    }


def paired_ratios(
    rows: Sequence[dict[str, Any]], server: str, other: str, key: str = "rps"
) -> dict[tuple[str, int], dict[str, float] | None]:
    """Per (job, connections): ``server``'s ``key`` over ``other``'s, taken within each round
    (rows with the same job, connections and round), summarised by :func:`spread`."""
    index = {(r["job"], r["connections"], r["round"], r["server"]): r for r in rows}
    cells = sorted({(r["job"], r["connections"]) for r in rows})
    out: dict[tuple[str, int], dict[str, float] | None] = {}
    for job, conn in cells:
        ratios = []
        rounds = sorted({r["round"] for r in rows if (r["job"], r["connections"]) == (job, conn)})
        for round_index in rounds:
            a = index.get((job, conn, round_index, server))
            b = index.get((job, conn, round_index, other))
            if a is None or b is None or not b[key]:
                continue
            ratios.append(a[key] / b[key])
        if ratios:
            out[(job, conn)] = spread(ratios)
    return out


def summary(rows: Sequence[dict[str, Any]], focal_names: Sequence[str]) -> list[dict[str, Any]]:
    """Every ratio worth reading: each focal configuration against thumbor, ipx and the first
    focal configuration (the baseline), per cell."""
    servers = {r["server"] for r in rows}
    pairs = [(f, o) for f in focal_names for o in ("thumbor", "ipx") if o in servers]
    pairs += [(f, focal_names[0]) for f in focal_names[1:]]
    out = []
    for server, other in pairs:
        for (job, conn), found in paired_ratios(rows, server, other).items():
            cpu = paired_ratios(
                [r for r in rows if (r.get("server_cpu_ms_per_request") or 0) > 0],
                server,
                other,
                "server_cpu_ms_per_request",
            ).get((job, conn))
            out.append(
                {
                    "job": job,
                    "connections": conn,
                    "server": server,
                    "against": other,
                    "rps_ratio": found,
                    "cpu_ratio": cpu,
                }
            )
    return out


# --- servers ---------------------------------------------------------------------------------


def ensure_ipx() -> None:
    if (IPX_MODULES / "ipx" / "package.json").exists():
        return
    if shutil.which("npm") is None:
        raise SystemExit("ipx needs node and npm (Debian: apt-get install nodejs npm)")
    IPX_PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(IPX_PREFIX), "--no-audit", "--no-fund", IPX_PACKAGE],
        check=True,
        timeout=900,
    )


def ipx_version() -> str:
    import json

    path = IPX_MODULES / "ipx" / "package.json"
    sharp = IPX_MODULES / "sharp" / "package.json"
    if not path.exists():
        return "?"
    found = json.loads(path.read_text())["version"]
    if sharp.exists():
        found += f" (sharp {json.loads(sharp.read_text())['version']})"
    return str(found)


def ipx_server(root: Path, tag: str = "ipx") -> harness.Server:
    state = harness.fresh_state(tag)
    port = harness.free_port()
    cmd = ["node", str(IPX_SCRIPT), str(IPX_MODULES), str(root), str(port)]
    return harness.Server(tag, cmd, port, "/healthz", state / "server.log")


def parse_focal(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """``NAME=FLAGS`` as (name, serve flags, environment)."""
    name, _, rest = spec.partition("=")
    flags: list[str] = []
    env: dict[str, str] = {}
    for token in shlex.split(rest):
        if token.startswith("env:"):
            key, _, value = token[4:].partition("=")
            env[key] = value
        else:
            flags.append(token)
    return name.strip(), flags, env


def focal_named(name: str) -> str:
    return "focal" if name == "focal" else f"focal-{name}"


def servers_for(
    mode: str, focal_specs: Sequence[tuple[str, list[str], dict[str, str]]], with_ipx: bool
) -> dict[str, harness.Server]:
    cache = mode == "warm"
    found: dict[str, harness.Server] = {}
    for name, flags, env in focal_specs:
        label = focal_named(name)
        server = harness.focal_server(
            harness.INPUTS, cache=cache, extra=flags, tag=f"3w-{label}-{mode}"
        )
        server.env = env or None
        found[label] = server
    found["thumbor"] = harness.thumbor_server(
        harness.INPUTS, cache=cache, processes=THUMBOR_PROCESSES, tag=f"3w-thumbor-{mode}"
    )
    if with_ipx:
        found["ipx"] = ipx_server(harness.INPUTS, tag=f"3w-ipx-{mode}")
    return found


def urls(server: str, job: Job) -> list[str]:
    sources = prepare.inputs(job.folder)
    if server.startswith("focal"):
        return [f"/cdn-cgi/image/{job.focal}/{s}" for s in sources]
    if server == "ipx":
        assert job.ipx is not None
        return [f"/{job.ipx}/{s}" for s in sources]
    return [f"/unsafe/{job.thumbor}/{s}" for s in sources]


def measure(
    server: harness.Server, paths: Sequence[str], connections: int, seconds: float
) -> dict[str, Any]:
    """throughput.measure, with the CPU time per request left out (None) when a child process
    (a detector worker) was replaced meanwhile: its CPU time left with it."""
    before = set(harness.children(server.pid))
    row = throughput.measure(server, paths, connections, seconds)
    replaced = bool(before - set(harness.children(server.pid)))
    row["processes_replaced"] = replaced
    if replaced:
        row["server_cpu_ms_per_request"] = None
    return row


def run_mode(
    mode: str,
    jobs: Sequence[Job],
    focal_specs: Sequence[tuple[str, list[str], dict[str, str]]],
    concurrency: Sequence[int],
    seconds: float,
    rounds: int,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chosen = [j for j in jobs if j.mode == mode]
    if not chosen:
        return [], {}
    with_ipx = any(j.ipx for j in chosen)
    servers = servers_for(mode, focal_specs, with_ipx)
    rows: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    started: list[harness.Server] = []
    try:
        for server in servers.values():
            server.start()
            started.append(server)
        for job in chosen:
            names = [n for n in servers if n != "ipx" or job.ipx]
            for name in names:
                outputs[f"{job.name}/{name}"] = throughput.check_and_prime(
                    servers[name].base, urls(name, job)
                )
            for connections in concurrency:
                for round_index, order in enumerate(schedule(names, rounds)):
                    for name in order:
                        row = measure(servers[name], urls(name, job), connections, seconds)
                        row.update({"job": job.name, "server": name, "round": round_index})
                        rows.append(row)
                        log(
                            f"  {job.name:13s} c={connections} r{round_index} {name:16s} "
                            f"{row['rps']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                            f"cpu {row['server_cpu_ms_per_request']} ms/req  "
                            f"errors {row['errors']}"
                        )
    finally:
        for server in started:
            server.stop()
    return rows, outputs


def print_summary(found: Sequence[dict[str, Any]]) -> None:
    for item in found:
        rps = item["rps_ratio"]
        cpu = item["cpu_ratio"]
        text = f"{rps['min']:.2f} / {rps['median']:.2f} / {rps['max']:.2f}"
        cpu_text = f"  cpu/req median {cpu['median']:.2f}" if cpu else ""
        print(
            f"  {item['job']:13s} c={item['connections']} {item['server']:16s} / "
            f"{item['against']:16s} req/s min/median/max {text}{cpu_text}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="focal vs thumbor vs ipx, interleaved.")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (rotations) per cell")
    parser.add_argument("--concurrency", default="1,2,8")
    parser.add_argument("--jobs", default=",".join(j.name for j in JOBS))
    parser.add_argument(
        "--focal",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="an extra focal configuration in the rotation (repeatable)",
    )
    parser.add_argument("--out", default="threeway", help="result name under benchmarks/results")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    jobs = [j for j in JOBS if j.name in args.jobs.split(",")]
    if any(j.ipx for j in jobs):
        ensure_ipx()
    given = [parse_focal(s) for s in args.focal]
    baseline = [s for s in given if s[0] == "focal"] or [("focal", [], {})]
    focal_specs = [baseline[0], *(s for s in given if s[0] != "focal")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    for mode in ("cold", "warm"):
        found, sizes = run_mode(
            mode,
            jobs,
            focal_specs,
            concurrency,
            args.seconds,
            args.rounds,
            lambda s: print(s, flush=True),
        )
        rows += found
        outputs |= sizes
    names = [focal_named(n) for n, _, _ in focal_specs]
    found_summary = summary(rows, names)
    print_summary(found_summary)
    if args.no_write:
        return 0
    data = {
        "setup": {
            "seconds_per_measurement": args.seconds,
            "rounds": args.rounds,
            "concurrency": concurrency,
            "load_generator": "wrk" if throughput.loadgen.wrk_available() else "python-httpx",
            "thumbor": f"thumbor 7.8, file loader, --processes {THUMBOR_PROCESSES}, PIL engine, "
            "progressive JPEG (its default); cold: no storage / no result storage; warm: file "
            "result storage",
            "ipx": f"ipx {ipx_version()} via benchmarks/ipx_server.cjs (createIPX + "
            "ipxFSStorage, node http), sharp.cache(false), progressive JPEG (ipx's default)",
            "focal": {focal_named(n): {"flags": f, "env": e} for n, f, e in focal_specs},
            "jobs": {
                j.name: {
                    "describe": j.describe,
                    "focal": j.focal,
                    "thumbor": j.thumbor,
                    "ipx": j.ipx,
                    "inputs": prepare.inputs(j.folder),
                }
                for j in jobs
            },
            "ipx_version": ipx_version(),
        },
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
        "summary": found_summary,
        "outputs": outputs,
    }
    harness.write_result(args.out, data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
