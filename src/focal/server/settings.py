"""Every setting of ``focal serve``, declared once.

``SETTINGS`` is the single table: name, kind, default, help. From it come the typed
:class:`Settings` record, the environment variables (``FOCAL_<NAME>``), the config-file keys
(TOML, same names), the command-line flags (``--name-with-dashes``) and docs/configuration.md.

Sources, lowest to highest precedence: defaults < config file (``--config``) < environment <
command-line flags. An unknown key in the config file, or a value of the wrong type anywhere, is an
error that names the setting and its source.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from focal.errors import SettingsError
from focal.face import sessions

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
BOOL_WORDS |= {"0": False, "false": False, "no": False, "off": False}
KINDS = ("str", "int", "float", "bool", "path", "list", "table", "switch")
SWITCH = ("auto", "on", "off")  # a "switch" setting: auto, or a boolean word (on, off)
LOG_LEVELS = ("debug", "info", "warning", "error")
# string settings with a closed set of values (the runtime names are focal.face.sessions')
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": LOG_LEVELS,
    "detector_runtime": sessions.RUNTIMES,
    "detector_precision": sessions.PRECISIONS,
    "s3_credentials": ("env", "boto3"),
    "cache_backend": ("disk", "s3"),
    "loop": ("auto", "asyncio", "uvloop"),
    "http": ("auto", "h11", "httptools"),
    "face_crop_side": ("output", "cap"),
}


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # one of KINDS
    default: Any
    help: str
    group: str
    secret: bool = False  # never printed with its value

    @property
    def env(self) -> str:
        return "FOCAL_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def shown_default(self) -> str:
        if self.name == "root":
            return "the bundled demo images (focal/demo)"
        if self.kind in ("list", "table"):
            return "(empty)" if not self.default else ", ".join(map(str, self.default))
        if self.kind == "bool":
            return "true" if self.default else "false"
        return str(self.default)


def _s(name: str, kind: str, default: Any, group: str, help: str, secret: bool = False) -> Setting:
    return Setting(name=name, kind=kind, default=default, help=help, group=group, secret=secret)


SETTINGS: tuple[Setting, ...] = (
    _s("host", "str", "127.0.0.1", "server", "Address to listen on."),
    _s("port", "int", 8080, "server", "TCP port to listen on."),
    _s(
        "workers",
        "int",
        1,
        "server",
        "HTTP worker processes sharing the one listening socket, each with its own image threads; "
        "all of them ask one detector pool, the supervisor's (docs/deployment.md, Workers).",
    ),
    _s(
        "loop",
        "str",
        "auto",
        "server",
        "Event loop: asyncio, uvloop (comes with focal, not on Windows), or auto (uvloop if any).",
    ),
    _s(
        "http",
        "str",
        "auto",
        "server",
        "HTTP/1.1 parser: h11, httptools (installed with focal), or auto (httptools if there).",
    ),
    _s("root", "path", None, "origin", "Folder of source images served as local sources."),
    _s(
        "remote_prefixes",
        "list",
        (),
        "origin",
        "URL prefixes that absolute-URL sources must start with. Empty: remote sources are off.",
    ),
    _s(
        "allowed_networks",
        "list",
        (),
        "origin",
        "Private networks (CIDR) remote sources may resolve to; loopback, link-local and private "
        "addresses are refused otherwise.",
    ),
    _s("remote_connect_timeout_s", "float", 5.0, "origin", "Connect timeout for remote sources."),
    _s("remote_read_timeout_s", "float", 10.0, "origin", "Read timeout for remote sources."),
    _s(
        "remote_total_timeout_s",
        "float",
        20.0,
        "origin",
        "Total time of one remote fetch, redirects and body included; an origin that sends a "
        "byte now and then stays under the read timeout, not under this.",
    ),
    _s("remote_max_redirects", "int", 3, "origin", "Redirects followed for a remote source."),
    _s(
        "s3_prefixes",
        "list",
        (),
        "origin",
        "s3://bucket/prefix/ that s3:// sources must start with (S3-compatible stores; needs the "
        "s3 extra). Empty: s3 sources are off.",
    ),
    _s(
        "s3_endpoint_url",
        "str",
        "",
        "origin",
        "S3 API endpoint of a non-AWS store (R2, MinIO, GCS), for sources, the s3 variant "
        "cache and focal batch's s3:// SRC and DEST. Empty: AWS.",
    ),
    _s("s3_region", "str", "", "origin", "S3 region. Empty: from AWS_REGION / AWS_DEFAULT_REGION."),
    _s(
        "s3_credentials",
        "str",
        "env",
        "origin",
        "env: the standard environment chain (AWS_* variables, web identity, ECS, instance "
        "metadata); boto3: botocore's chain, with ~/.aws profiles (needs boto3). Never the URL.",
    ),
    _s("s3_connect_timeout_s", "float", 2.0, "origin", "Connect timeout of object-store calls."),
    _s("s3_read_timeout_s", "float", 10.0, "origin", "Read timeout of object-store calls."),
    _s("cache_enabled", "bool", True, "cache", "Keep transformed variants on disk."),
    _s("cache_dir", "path", "~/.cache/focal/variants", "cache", "Folder of the variant cache."),
    _s(
        "cache_max_mb",
        "int",
        1024,
        "cache",
        "Size bound of the variant cache; least recently used variants are evicted past it.",
    ),
    _s(
        "cache_min_free_mb",
        "int",
        512,
        "cache",
        "Free space kept on the cache's disk, whatever cache_max_mb says: least recently used "
        "variants are evicted to keep it, and a variant that would go under it is not written "
        "(it is still served).",
    ),
    _s(
        "memory_cache_mb",
        "int",
        32,
        "cache",
        "The most recently used variants also kept in each worker's memory (0: off), answered "
        "without reading the cache file; a local source's identity is then re-read at most once "
        "a second, so a replaced source is noticed within a second.",
    ),
    _s("max_age", "int", 86400, "cache", "Cache-Control max-age (seconds) of variants."),
    _s(
        "cache_backend",
        "str",
        "disk",
        "cache",
        "disk: cache_dir, this instance's own; s3: cache_s3_prefix, shared by every instance "
        "(docs/scaling.md).",
    ),
    _s(
        "cache_s3_prefix",
        "str",
        "",
        "cache",
        "s3://bucket/prefix/ of the shared variant cache (cache_backend = s3).",
    ),
    _s(
        "shared_cache_timeout_s",
        "float",
        0.5,
        "cache",
        "Connect and read timeout of one shared detection cache call (Redis); past it: a miss.",
    ),
    _s(
        "signing_keys",
        "list",
        (),
        "signing",
        "HMAC-SHA256 keys for signed URLs; any of them is accepted (rotation). Empty: no signing.",
        secret=True,
    ),
    _s(
        "require_signature",
        "bool",
        True,
        "signing",
        "With signing keys set, refuse unsigned URLs. False: check signatures only when present.",
    ),
    _s("max_pixels", "int", 100_000_000, "limits", "Largest source frame (pixels, from header)."),
    _s("max_bytes", "int", 100 * 1024 * 1024, "limits", "Largest source file (bytes)."),
    _s("max_output_pixels", "int", 50_000_000, "limits", "Largest output image (pixels)."),
    _s("max_frames", "int", 300, "limits", "Most animation frames read from a source."),
    _s(
        "max_animation_pixels",
        "int",
        100_000_000,
        "limits",
        "Largest animation decoded: frames x canvas pixels, all frames together (each frame is "
        "decoded at the full canvas size, however small the file).",
    ),
    _s("request_timeout_s", "float", 30.0, "limits", "Time budget of one request, all stages."),
    _s(
        "concurrency",
        "int",
        0,
        "limits",
        "Image transformations run at once (threads) in each worker process; 0: the CPU cores "
        "divided among the workers (at least one each).",
    ),
    _s(
        "image_queue",
        "int",
        64,
        "limits",
        "Requests that may wait for an image thread; past it the answer is 503 + Retry-After.",
    ),
    _s(
        "header_timeout_s",
        "float",
        10.0,
        "limits",
        "Time a client connection has to send a complete request head (request line and "
        "headers), from its accept or the end of its last answer; past it the connection closes.",
    ),
    _s(
        "keep_alive_timeout_s",
        "float",
        5.0,
        "limits",
        "An idle keep-alive connection is closed after this many seconds without a request.",
    ),
    _s(
        "max_header_bytes",
        "int",
        32768,
        "limits",
        "Largest request head (request line and headers, bytes); past it 431.",
    ),
    _s("max_headers", "int", 100, "limits", "Most header fields in a request; past it 431."),
    _s("max_url_bytes", "int", 8192, "limits", "Longest request URL (bytes); past it 414."),
    _s(
        "max_connections",
        "int",
        4096,
        "limits",
        "Client connections open at once in each worker process (lowered to sit below the "
        "open-file limit); past it a new connection is answered 503 and closed.",
    ),
    _s("face", "bool", True, "detector", "Run the face detector (gravity=face)."),
    _s("detector_workers", "int", 1, "detector", "Detector processes."),
    _s("detector_queue", "int", 16, "detector", "Images waiting for the detector; past it 503."),
    _s("detector_deadline_s", "float", 10.0, "detector", "Detection deadline; past it: fallback."),
    _s("detector_batch_window_ms", "float", 5.0, "detector", "Wait to gather a batch (ms)."),
    _s("detector_max_batch", "int", 8, "detector", "Most images per detector batch."),
    _s(
        "detector_rss_limit_mb",
        "int",
        512,
        "detector",
        "A detector process over this resident memory is restarted.",
    ),
    _s(
        "detector_runtime",
        "str",
        "auto",
        "detector",
        "auto (ONNX Runtime at fp32, OpenVINO at bf16/f16), onnxruntime, openvino, or torch "
        "(needs the gpu extra; docs/gpu.md).",
    ),
    _s("detector_precision", "str", "fp32", "detector", "fp32, bf16 or f16 (docs/detector.md)."),
    _s("detector_device", "str", "auto", "detector", "torch only: auto, cpu, cuda or cuda:N."),
    _s(
        "detector_idle_offload_s",
        "float",
        300.0,
        "detector",
        "torch only: release the model (and GPU memory) after this many idle seconds; 0 never.",
    ),
    _s(
        "face_crop_threshold",
        "float",
        sessions.DetectorConfig.crop_threshold,
        "detector",
        "CPU runtimes: a face crop counts detections scoring above this as faces; weaker ones "
        "(down to 0.05) only steer the crop (docs/cropping.md). redact=faces hides the faces "
        "above it (docs/accuracy.md).",
    ),
    _s(
        "detector_flip",
        "bool",
        False,
        "detector",
        "CPU runtimes: also detect on the mirrored image, merged by NMS (about twice the "
        "detector time; docs/detector.md).",
    ),
    _s(
        "detector_max_side",
        "int",
        sessions.DetectorConfig.max_side,
        "detector",
        f"Most pixels per side detection runs on, {sessions.MIN_MAX_SIDE} to "
        f"{sessions.DetectorConfig.max_side} (the published cap): smaller is faster and finds "
        "fewer small faces (docs/detector.md).",
    ),
    _s(
        "face_crop_side",
        "str",
        "cap",
        "detector",
        "Detection side of gravity=face crops with zoom=0: output (twice the output's scale, at "
        "most detector_max_side) or cap (always detector_max_side, the published algorithm). "
        "Redaction always detects at detector_max_side (docs/detector.md).",
    ),
    _s("detection_cache_entries", "int", 1024, "detector", "Detections kept per image content."),
    _s(
        "presets",
        "table",
        (),
        "presets",
        "Named option sets, used in URLs as /cdn-cgi/image/<name>/<source> or preset=<name> "
        '(docs/frameworks.md). TOML: presets = {avatar = "width=256,height=256,fit=cover"}; '
        'environment and flag: a JSON object, {"avatar": "width=256,height=256,fit=cover"}.',
    ),
    _s(
        "presets_only",
        "bool",
        False,
        "presets",
        "Serve presets only: a URL with any other option is refused with 403.",
    ),
    _s(
        "detection_cache_url",
        "str",
        "",
        "detector",
        "redis://host:port/db of the detection cache shared by every instance (needs the redis "
        "extra). Empty: each process keeps its own only.",
    ),
    _s(
        "detection_cache_ttl_s",
        "int",
        30 * 86400,
        "detector",
        "How long the shared detection cache keeps an answer (seconds).",
    ),
    _s(
        "detector_url",
        "str",
        "",
        "detector",
        "http(s)://host:port of the face detector service (`focal detector serve`, "
        "docs/scaling.md) that every instance shares. Set: no detector pool and no model in "
        "this process. Empty: this host runs its own pool.",
    ),
    _s("detector_service_host", "str", "127.0.0.1", "detector_service", "Address it listens on."),
    _s("detector_service_port", "int", 8000, "detector_service", "TCP port it listens on."),
    _s(
        "detector_service_address",
        "str",
        "",
        "detector_service",
        "Ray cluster to deploy on (ray://host:10001 or host:6379; `--address`). Empty: start a "
        "local Ray.",
    ),
    _s(
        "detector_service_min_replicas",
        "int",
        1,
        "detector_service",
        "Fewest replicas; 0: none after detector_service_idle_s without requests (the first "
        "request after that waits for a replica to load the model).",
    ),
    _s("detector_service_max_replicas", "int", 2, "detector_service", "Most replicas."),
    _s(
        "detector_service_idle_s",
        "float",
        300.0,
        "detector_service",
        "Seconds of low load before replicas are removed (down to the minimum).",
    ),
    _s(
        "detector_service_target_requests",
        "float",
        4.0,
        "detector_service",
        "Requests in flight per replica the autoscaler aims at.",
    ),
    _s("detector_service_replica_cpus", "float", 1.0, "detector_service", "CPUs per replica."),
    _s(
        "detector_service_replica_gpus",
        "float",
        0.0,
        "detector_service",
        "GPUs per replica (a fraction shares one GPU); with detector_runtime = torch.",
    ),
    _s(
        "detector_service_max_batch",
        "int",
        8,
        "detector_service",
        "Most images in one batch of a replica, from any instances.",
    ),
    _s(
        "detector_service_batch_wait_ms",
        "float",
        10.0,
        "detector_service",
        "Longest a batch waits for more images after its first (ms).",
    ),
    _s("log_level", "str", "info", "server", "One of debug, info, warning, error."),
    _s(
        "playground",
        "switch",
        "auto",
        "server",
        "Serve the playground page at /: auto (only when host is a loopback address), on, off. "
        "Never when signatures are required; with presets_only it takes preset names only and "
        "serves no originals (docs/playground.md).",
    ),
    _s(
        "robots_txt",
        "str",
        "",
        "crawlers",
        "File of the operator's robots.txt rules, served at /robots.txt after the managed "
        "section (docs/crawlers.md). Empty, with robots_managed off and no content_signal: "
        "/robots.txt is not answered.",
    ),
    _s(
        "robots_managed",
        "bool",
        False,
        "crawlers",
        "Start /robots.txt with a managed section that disallows every crawler on the "
        "known-crawlers list.",
    ),
    _s(
        "content_signal",
        "str",
        "",
        "crawlers",
        "Content-Signal line of /robots.txt's User-agent: * group, as search=yes, ai-train=no "
        "(keys search, ai-input, ai-train; values yes or no). Empty: none.",
    ),
    _s(
        "crawler_rules",
        "str",
        "",
        "crawlers",
        "TOML file of per-crawler rules: allow, refuse or charge, by crawler and by what is "
        "asked (docs/crawlers.md). Empty: no rules, nothing checked per request.",
    ),
    _s(
        "known_crawlers",
        "str",
        "",
        "crawlers",
        "JSON file replacing the shipped list of AI crawler user agents (ai.robots.txt's "
        "robots.json format, or an array of names). Empty: the shipped, dated snapshot.",
    ),
    _s(
        "crawler_directory_networks",
        "list",
        (),
        "crawlers",
        "Private networks (CIDR) a crawler's key directory may resolve to; loopback, "
        "link-local and private addresses are refused otherwise. A directory inside them may "
        "be plain http.",
    ),
    _s(
        "crawler_directory_timeout_s",
        "float",
        3.0,
        "crawlers",
        "Time bound of one key directory fetch, all of it (resolve, connect, read).",
    ),
    _s(
        "crawler_directory_max_bytes",
        "int",
        65536,
        "crawlers",
        "Largest key directory read; past it the fetch fails.",
    ),
    _s(
        "crawler_key_max_age_s",
        "int",
        3600,
        "crawlers",
        "Longest a directory's keys are kept, whatever its Cache-Control max-age says (at "
        "least 10 s; 300 s without max-age).",
    ),
    _s(
        "crawler_clock_skew_s",
        "float",
        30.0,
        "crawlers",
        "Clock difference allowed to a signature's created and expires.",
    ),
    _s(
        "crawler_signature_max_age_s",
        "int",
        3600,
        "crawlers",
        "Longest window a signature may have: expires - created, and the age since created.",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def demo_root() -> Path:
    return Path(str(importlib.resources.files("focal").joinpath("demo")))


DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}

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


@dataclass(frozen=True)
class Settings:
    """The typed record of SETTINGS: each default is the table's (DEFAULTS)."""

    host: str = DEFAULTS["host"]
    port: int = DEFAULTS["port"]
    workers: int = DEFAULTS["workers"]
    loop: str = DEFAULTS["loop"]
    http: str = DEFAULTS["http"]
    root: Path = field(default_factory=lambda: demo_root())
    remote_prefixes: tuple[str, ...] = DEFAULTS["remote_prefixes"]
    allowed_networks: tuple[str, ...] = DEFAULTS["allowed_networks"]
    remote_connect_timeout_s: float = DEFAULTS["remote_connect_timeout_s"]
    remote_read_timeout_s: float = DEFAULTS["remote_read_timeout_s"]
    remote_total_timeout_s: float = DEFAULTS["remote_total_timeout_s"]
    remote_max_redirects: int = DEFAULTS["remote_max_redirects"]
    s3_prefixes: tuple[str, ...] = DEFAULTS["s3_prefixes"]
    s3_endpoint_url: str = DEFAULTS["s3_endpoint_url"]
    s3_region: str = DEFAULTS["s3_region"]
    s3_credentials: str = DEFAULTS["s3_credentials"]
    s3_connect_timeout_s: float = DEFAULTS["s3_connect_timeout_s"]
    s3_read_timeout_s: float = DEFAULTS["s3_read_timeout_s"]
    cache_enabled: bool = DEFAULTS["cache_enabled"]
    cache_dir: Path = field(default_factory=lambda: Path(DEFAULTS["cache_dir"]).expanduser())
    cache_max_mb: int = DEFAULTS["cache_max_mb"]
    cache_min_free_mb: int = DEFAULTS["cache_min_free_mb"]
    memory_cache_mb: int = DEFAULTS["memory_cache_mb"]
    max_age: int = DEFAULTS["max_age"]
    cache_backend: str = DEFAULTS["cache_backend"]
    cache_s3_prefix: str = DEFAULTS["cache_s3_prefix"]
    shared_cache_timeout_s: float = DEFAULTS["shared_cache_timeout_s"]
    signing_keys: tuple[str, ...] = DEFAULTS["signing_keys"]
    require_signature: bool = DEFAULTS["require_signature"]
    max_pixels: int = DEFAULTS["max_pixels"]
    max_bytes: int = DEFAULTS["max_bytes"]
    max_output_pixels: int = DEFAULTS["max_output_pixels"]
    max_frames: int = DEFAULTS["max_frames"]
    max_animation_pixels: int = DEFAULTS["max_animation_pixels"]
    request_timeout_s: float = DEFAULTS["request_timeout_s"]
    concurrency: int = DEFAULTS["concurrency"]
    image_queue: int = DEFAULTS["image_queue"]
    header_timeout_s: float = DEFAULTS["header_timeout_s"]
    keep_alive_timeout_s: float = DEFAULTS["keep_alive_timeout_s"]
    max_header_bytes: int = DEFAULTS["max_header_bytes"]
    max_headers: int = DEFAULTS["max_headers"]
    max_url_bytes: int = DEFAULTS["max_url_bytes"]
    max_connections: int = DEFAULTS["max_connections"]
    face: bool = DEFAULTS["face"]
    detector_workers: int = DEFAULTS["detector_workers"]
    detector_queue: int = DEFAULTS["detector_queue"]
    detector_deadline_s: float = DEFAULTS["detector_deadline_s"]
    detector_batch_window_ms: float = DEFAULTS["detector_batch_window_ms"]
    detector_max_batch: int = DEFAULTS["detector_max_batch"]
    detector_rss_limit_mb: int = DEFAULTS["detector_rss_limit_mb"]
    detector_runtime: str = DEFAULTS["detector_runtime"]
    detector_precision: str = DEFAULTS["detector_precision"]
    detector_device: str = DEFAULTS["detector_device"]
    detector_idle_offload_s: float = DEFAULTS["detector_idle_offload_s"]
    face_crop_threshold: float = DEFAULTS["face_crop_threshold"]
    detector_flip: bool = DEFAULTS["detector_flip"]
    detector_max_side: int = DEFAULTS["detector_max_side"]
    face_crop_side: str = DEFAULTS["face_crop_side"]
    detection_cache_entries: int = DEFAULTS["detection_cache_entries"]
    presets: tuple[tuple[str, str], ...] = DEFAULTS["presets"]
    presets_only: bool = DEFAULTS["presets_only"]
    detection_cache_url: str = DEFAULTS["detection_cache_url"]
    detection_cache_ttl_s: int = DEFAULTS["detection_cache_ttl_s"]
    detector_url: str = DEFAULTS["detector_url"]
    detector_service_host: str = DEFAULTS["detector_service_host"]
    detector_service_port: int = DEFAULTS["detector_service_port"]
    detector_service_address: str = DEFAULTS["detector_service_address"]
    detector_service_min_replicas: int = DEFAULTS["detector_service_min_replicas"]
    detector_service_max_replicas: int = DEFAULTS["detector_service_max_replicas"]
    detector_service_idle_s: float = DEFAULTS["detector_service_idle_s"]
    detector_service_target_requests: float = DEFAULTS["detector_service_target_requests"]
    detector_service_replica_cpus: float = DEFAULTS["detector_service_replica_cpus"]
    detector_service_replica_gpus: float = DEFAULTS["detector_service_replica_gpus"]
    detector_service_max_batch: int = DEFAULTS["detector_service_max_batch"]
    detector_service_batch_wait_ms: float = DEFAULTS["detector_service_batch_wait_ms"]
    log_level: str = DEFAULTS["log_level"]
    playground: str = DEFAULTS["playground"]  # auto, on or off
    robots_txt: str = DEFAULTS["robots_txt"]
    robots_managed: bool = DEFAULTS["robots_managed"]
    content_signal: str = DEFAULTS["content_signal"]
    crawler_rules: str = DEFAULTS["crawler_rules"]
    known_crawlers: str = DEFAULTS["known_crawlers"]
    crawler_directory_networks: tuple[str, ...] = DEFAULTS["crawler_directory_networks"]
    crawler_directory_timeout_s: float = DEFAULTS["crawler_directory_timeout_s"]
    crawler_directory_max_bytes: int = DEFAULTS["crawler_directory_max_bytes"]
    crawler_key_max_age_s: int = DEFAULTS["crawler_key_max_age_s"]
    crawler_clock_skew_s: float = DEFAULTS["crawler_clock_skew_s"]
    crawler_signature_max_age_s: int = DEFAULTS["crawler_signature_max_age_s"]

    def __post_init__(self) -> None:
        empty = [i for i, key in enumerate(self.signing_keys) if not key.strip()]
        if empty:
            raise SettingsError(
                f"Expected non-empty keys for signing_keys but received an empty key "
                f"(position {empty[0] + 1} of {len(self.signing_keys)})"
            )
        if self.playground not in SWITCH:
            raise SettingsError(
                f"Expected one of {', '.join(SWITCH)} for playground but received "
                f"{self.playground!r}"
            )
        if self.workers < 1:
            raise SettingsError(f"Expected at least 1 for workers but received {self.workers}")
        positive = ["header_timeout_s", "remote_total_timeout_s", "max_connections"]
        positive += ["max_header_bytes", "max_headers", "max_url_bytes"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"Expected more than 0 for {name} but received 0")
        low, high = sessions.MIN_MAX_SIDE, sessions.DetectorConfig.max_side
        if not low <= self.detector_max_side <= high:
            raise SettingsError(
                f"Expected {low} to {high} pixels for detector_max_side but received "
                f"{self.detector_max_side}"
            )
        if self.detector_url:
            check_service_url(self.detector_url)

    @property
    def threads(self) -> int:
        if self.concurrency > 0:
            return self.concurrency
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))


def check_service_url(url: str) -> None:
    """Refuse a detector_url that is not http(s)://host[:port][/path] (SettingsError)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
    ):
        raise SettingsError(
            f"Expected http(s)://host:port of the detector service for detector_url but "
            f"received {url!r}"
        )


# ---- converting values -------------------------------------------------------------------------


def _bad(setting: Setting, what: str, value: object, source: str) -> SettingsError:
    return SettingsError(f"Expected {what} for {setting.name} ({source}) but received {value!r}")


def _to_bool(setting: Setting, value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise _bad(setting, "true or false", value, source)


def _to_number(setting: Setting, value: object, source: str) -> int | float:
    if isinstance(value, bool):
        raise _bad(setting, f"a number ({setting.kind})", value, source)
    try:
        number: int | float = int(value) if setting.kind == "int" else float(value)  # type: ignore[call-overload, arg-type]
    except (TypeError, ValueError):
        raise _bad(setting, f"a number ({setting.kind})", value, source) from None
    if number < 0:
        raise _bad(setting, "a number of at least 0", value, source)
    return number


def _to_list(setting: Setting, value: object, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = tuple(part.strip() for part in value.split(","))
        items = tuple(part for part in parts if part)
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        parts = items = tuple(value)
    else:
        raise _bad(setting, "a list of strings", value, source)
    if setting.secret and (not items or any(not part.strip() for part in parts)):
        # a secret list that is given must hold only real keys: an empty item, or a value with
        # none at all (a missing secret in a template), must not quietly turn signing off
        raise _bad(
            setting, "a list of non-empty keys (leave the setting unset for none)", "", source
        )
    return items


def _to_table(setting: Setting, value: object, source: str) -> tuple[tuple[str, str], ...]:
    """A TOML table of strings, or (environment, flag) the same as a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise _bad(setting, "a JSON object of strings", value, source) from None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return tuple(sorted(value.items()))
    raise _bad(setting, "a table of strings", value, source)


def _to_switch(setting: Setting, value: object, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return "on" if _to_bool(setting, value, source) else "off"


def convert(setting: Setting, value: object, source: str) -> Any:
    """``value`` (from a TOML file, the environment or a flag) as the setting's type."""
    if setting.kind == "bool":
        return _to_bool(setting, value, source)
    if setting.kind in ("int", "float"):
        return _to_number(setting, value, source)
    if setting.kind == "list":
        return _to_list(setting, value, source)
    if setting.kind == "table":
        return _to_table(setting, value, source)
    if setting.kind == "switch":
        return _to_switch(setting, value, source)
    if not isinstance(value, str):
        raise _bad(setting, "a string", value, source)
    if setting.kind == "path":
        return Path(value).expanduser()
    choices = CHOICES.get(setting.name)
    if choices is None:
        return value
    if value.lower() not in choices:
        raise _bad(setting, "one of " + ", ".join(choices), value, source)
    return value.lower()


# ---- sources -----------------------------------------------------------------------------------


def from_file(path: Path) -> dict[str, Any]:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"Cannot read config file {path}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in table.items():
        setting = BY_NAME.get(key.replace("-", "_"))
        if setting is None:
            raise SettingsError(f"Unknown setting {key!r} in config file {path}")
        values[setting.name] = convert(setting, value, f"config file {path}")
    return values


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = convert(setting, environ[setting.env], setting.env)
    return values


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if hasattr(args, setting.name):
            value = getattr(args, setting.name)
            values[setting.name] = convert(setting, value, setting.flag)
    return values


def defaults() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name == "root":
            values[setting.name] = demo_root()
        elif setting.kind == "path":
            values[setting.name] = Path(setting.default).expanduser()
        else:
            values[setting.name] = setting.default
    return values


def load(
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    args: argparse.Namespace | None = None,
) -> Settings:
    """Defaults < config file < environment < flags."""
    environ = os.environ if environ is None else environ
    values = defaults()
    if config is None and "FOCAL_CONFIG" in environ:
        config = Path(environ["FOCAL_CONFIG"]).expanduser()
    if config is not None:
        values |= from_file(config)
    values |= from_env(environ)
    if args is not None:
        values |= from_args(args)
    return Settings(**values)


# ---- generated interfaces ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; flags not given stay absent, so lower sources show through."""
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML config file (env FOCAL_CONFIG)."
    )
    for setting in SETTINGS:
        helptext = f"{setting.help} Default: {setting.shown_default()}. Env {setting.env}."
        if setting.kind == "bool":
            action: Any = argparse.BooleanOptionalAction
            parser.add_argument(
                setting.flag, action=action, default=argparse.SUPPRESS, help=helptext
            )
        elif setting.kind == "switch":  # --name [auto|on|off], --no-name
            parser.add_argument(
                setting.flag,
                nargs="?",
                const="on",
                default=argparse.SUPPRESS,
                metavar="|".join(SWITCH),
                help=helptext,
            )
            parser.add_argument(
                "--no-" + setting.flag[2:],
                dest=setting.name,
                action="store_const",
                const="off",
                default=argparse.SUPPRESS,
                help=f"The same as {setting.flag}=off.",
            )
        elif setting.kind == "list":
            parser.add_argument(
                setting.flag,
                action="append",
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=helptext + " Repeat the flag for several values.",
            )
        else:
            parser.add_argument(
                setting.flag, default=argparse.SUPPRESS, metavar=setting.kind.upper(), help=helptext
            )


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
        "<!-- Generated from src/focal/server/settings.py by "
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
    in code: at most MAX_OPTIONS_LENGTH characters, MAX_VALUE_LENGTH a value (focal.options)."""
    lines = ["| setting | default | protects against |", "|---|---|---|"]
    for setting in SETTINGS:
        if setting.name in PROTECTS:
            default = setting.shown_default().replace("|", "\\|")
            lines.append(f"| `{setting.name}` | {default} | {PROTECTS[setting.name]} |")
    return "\n".join(lines) + "\n"


def field_names() -> Sequence[str]:
    return [f.name for f in fields(Settings)]


if __name__ == "__main__":
    print(limits_markdown() if sys.argv[1:] == ["--limits"] else markdown(), end="")
