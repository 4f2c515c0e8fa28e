"""The pages generated from the settings table: docs/configuration.md (``markdown``) and the
limits table of docs/deployment.md (``limits_markdown``, with what each limit protects against).
``python -m focal.server.settings [--limits]`` prints them; tests keep the pages current.
"""

from __future__ import annotations

from focal.server.settings_table import SETTINGS, Setting

# What each limit protects against: docs/deployment.md's table (``limits_markdown``).
PROTECTS: dict[str, str] = {
    "max_bytes": "huge files filling memory; checked from the file size (local) or while "
    "streaming (remote), before decoding (413)",
    "max_pixels": "decompression bombs: a small file whose header claims a huge image; read from "
    "the header before any pixel is decoded (413)",
    "max_frames": "animations with thousands of frames, each decoded and processed (413)",
    "max_animation_pixels": "canvas bombs: tiny frames on a huge canvas, each decoded at the "
    "full canvas size (a 5 kB WebP of 100 frames on 9000x9000 is 8,100 megapixels); counted "
    "from the header before any pixel (413)",
    "max_output_pixels": "requests that enlarge (`width=12000,height=12000,fit=pad`, `dpr=3`, "
    "many frames) into huge outputs (413)",
    "request_timeout_s": "slow origins and slow jobs: past it the answer is 504 and the job's "
    "libvips computation is killed, so its CPU and memory are freed within a tile",
    "concurrency": "CPU and memory overcommit: at most this many transformations run at once",
    "image_queue": "unbounded queues under overload: past it the answer is 503 with Retry-After",
    "detector_queue": "a slow detector holding requests: past it 503 with Retry-After",
    "detector_deadline_s": "a stuck detector: past it the centre crop, marked and not cached",
    "detector_rss_limit_mb": "memory growth in the inference runtime: the worker is replaced "
    "(it holds about 350 MiB under a mixed-size load; docs/detector.md)",
    "remote_prefixes": "focal fetching (or redirecting to) arbitrary URLs on anyone's behalf",
    "allowed_networks": "SSRF: sources resolving to loopback, link-local (cloud metadata), private "
    "or other non-public addresses are refused unless listed here",
    "remote_max_redirects": "redirect loops",
    "remote_connect_timeout_s": "origins that never answer",
    "remote_read_timeout_s": "origins that answer slowly, byte by byte",
    "remote_total_timeout_s": "origins that drip a byte every few seconds, each gap under the "
    "read timeout: the whole fetch, redirects included, ends past it (502)",
    "header_timeout_s": "silent connections and request heads sent a byte at a time "
    "(slowloris), each holding a descriptor: closed past it, counted in "
    '`focal_http_connections_closed_total{reason="header_timeout"}`',
    "keep_alive_timeout_s": "idle keep-alive connections held open between requests",
    "max_header_bytes": "huge request heads filling memory: counted as they arrive (431)",
    "max_headers": "requests with tens of thousands of header fields (431)",
    "max_url_bytes": "huge URLs, which the parser would rebuild piece by piece on the event "
    "loop (414)",
    "max_connections": "running out of file descriptors (then every client, /healthz too, "
    "waits): past it new connections get 503 at once; the open-file limit is raised to its "
    "hard limit at start-up",
    "signing_keys": "variant floods: with keys set, only URLs your site signed are served; an "
    "empty key is a start-up error, never a silent switch to unsigned",
    "cache_max_mb": "the variant cache filling the disk",
    "crawler_directory_networks": "SSRF through a crawler's Signature-Agent: key directories "
    "are fetched only for agents a rule lists, and refused on non-public addresses unless listed "
    "here, before any connection",
    "crawler_directory_timeout_s": "slow key directories holding a crawler's request",
    "crawler_directory_max_bytes": "huge key directories filling memory",
    "cache_min_free_mb": "the variant cache filling a disk smaller than cache_max_mb (statvfs is "
    "read before each write); a full, read-only or missing cache disk costs the cache, not the "
    "request",
}


GROUP_TITLES = {
    "server": "Server",
    "origin": "Sources (origins)",
    "cache": "Variant cache",
    "signing": "Signed URLs",
    "limits": "Limits",
    "presets": "Presets",
    "detector": "Face detector",
    "detector_service": "Face detector service (focal detector serve)",
    "crawlers": "Crawlers (robots.txt, rules, pay per crawl)",
}


def _row(setting: Setting) -> str:
    default = setting.shown_default().replace("|", "\\|")
    meaning = setting.help + (
        " Secret: set it in the config file or environment." if setting.secret else ""
    )
    return (
        f"| `{setting.name}` | `{setting.env}` | `{setting.flag}` | {setting.kind} | {default} "
        f"| {meaning} |"
    )


def markdown() -> str:
    """docs/configuration.md, generated from ``SETTINGS`` (``python -m focal.server.settings``)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from src/focal/server/settings_table.py by "
        "`python -m focal.server.settings > docs/configuration.md`; do not edit by hand. -->",
        "",
        "`focal serve` reads its settings from, lowest precedence first: the defaults below, a "
        "TOML config file (`--config FILE` or `FOCAL_CONFIG`; keys are the setting names), the "
        "environment (`FOCAL_<NAME>`), and command-line flags. An unknown key in the config "
        "file, or a value of the wrong type anywhere, stops the server with a message naming "
        "the setting.",
        "",
        "Lists: in the environment, comma-separated; in TOML, an array of strings; on the "
        "command line, repeat the flag. Booleans: `true/false`, `1/0`, `yes/no`, `on/off`; "
        "flags come as `--name` and `--no-name`. Signing keys are secrets: prefer the config "
        "file or the environment to flags, which other users of the machine can see.",
        "",
        "The face model is found by the detector in `~/.cache/focal/models` or `FOCAL_MODEL_DIR` "
        "(installed by `focal models fetch`).",
    ]
    for group, title in GROUP_TITLES.items():
        lines += ["", f"## {title}", "", "| setting | env | flag | type | default | meaning |"]
        lines.append("|---|---|---|---|---|---|")
        lines += [_row(s) for s in SETTINGS if s.group == group]
    lines += ["", "Example config file:", "", "```toml"]
    lines += [
        'root = "/srv/images"',
        "port = 8080",
        'cache_dir = "/var/cache/focal"',
        "cache_max_mb = 4096",
        'signing_keys = ["current-key", "previous-key"]',
        "face = true",
        "```",
        "",
    ]
    return "\n".join(lines)


def limits_markdown() -> str:
    """The limits table of docs/deployment.md, from SETTINGS and PROTECTS (a test keeps the page
    current; ``python -m focal.server.settings --limits`` prints it). Option strings are bounded
    in code: at most MAX_OPTIONS_LENGTH characters, MAX_VALUE_LENGTH a value
    (focal.option_parsers)."""
    lines = ["| setting | default | protects against |", "|---|---|---|"]
    for setting in SETTINGS:
        if setting.name in PROTECTS:
            default = setting.shown_default().replace("|", "\\|")
            lines.append(f"| `{setting.name}` | {default} | {PROTECTS[setting.name]} |")
    return "\n".join(lines) + "\n"
