"""The table of every setting of ``focal serve``, declared once: name, kind, default, group and
help, and the closed sets of values some take. focal.server.settings turns it into the typed
record, the environment variables, the config-file keys and the flags; focal.server.settings_docs
into docs/configuration.md.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focal import geometry
from focal.face import sessions

KINDS = ("str", "int", "float", "bool", "path", "list", "table", "switch")
SWITCH = ("auto", "on", "off")  # a "switch" setting: auto, or a boolean word (on, off)
LOG_LEVELS = ("debug", "info", "warning", "error")
# string settings with a closed set of values (the runtime names are focal.face.sessions', the
# face crop sides focal.geometry's)
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": LOG_LEVELS,
    "detector_runtime": sessions.RUNTIMES,
    "detector_precision": sessions.PRECISIONS,
    "s3_credentials": ("env", "boto3"),
    "cache_backend": ("disk", "s3"),
    "loop": ("auto", "asyncio", "uvloop"),
    "http": ("auto", "h11", "httptools"),
    "face_crop_side": geometry.FACE_CROP_SIDES,
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
        geometry.FACE_CROP_SIDE,
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
    _s(
        "detector_service_queue",
        "int",
        64,
        "detector_service",
        "Images the service's proxy holds waiting for a replica; past it the service answers 503 "
        "and focal answers 503 with Retry-After, as a full local pool does (0: no limit).",
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
