"""The settings of ``focal serve``: the typed :class:`Settings` record and how it is loaded.

Every setting is declared once, in ``SETTINGS`` (focal.server.settings_table): name, kind,
default, help. From it come the record, the environment variables (``FOCAL_<NAME>``), the
config-file keys (TOML, same names), the command-line flags (``--name-with-dashes``), and
(focal.server.settings_docs) docs/configuration.md and docs/deployment.md's limits table.

Sources, lowest to highest precedence: defaults < config file (``--config``) < environment <
command-line flags. An unknown key in the config file, or a value of the wrong type anywhere, is an
error that names the setting and its source.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from focal.errors import SettingsError as SettingsError
from focal.face import sessions
from focal.server.settings_docs import limits_markdown as limits_markdown
from focal.server.settings_docs import markdown as markdown
from focal.server.settings_table import BY_NAME as BY_NAME
from focal.server.settings_table import CHOICES, DEFAULTS, SWITCH, demo_root
from focal.server.settings_table import SETTINGS as SETTINGS
from focal.server.settings_table import Setting as Setting

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
BOOL_WORDS |= {"0": False, "false": False, "no": False, "off": False}


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
    detector_service_queue: int = DEFAULTS["detector_service_queue"]
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


def field_names() -> Sequence[str]:
    return [f.name for f in fields(Settings)]


if __name__ == "__main__":
    print(limits_markdown() if sys.argv[1:] == ["--limits"] else markdown(), end="")
