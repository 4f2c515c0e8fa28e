from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from focal.server import settings as st
from focal.server import settings_docs
from focal.server.settings import SETTINGS, Settings, SettingsError, load

ROOT = Path(__file__).resolve().parents[1]


def parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_setting_has_one_row_and_one_field() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(st.field_names())


def test_table_defaults_equal_the_record_defaults() -> None:
    record = Settings()
    loaded = load(environ={})
    for setting in SETTINGS:
        assert getattr(loaded, setting.name) == getattr(record, setting.name), setting.name


def test_required_settings_are_there() -> None:
    wanted = {
        "root", "host", "port", "remote_prefixes", "allowed_networks", "cache_dir",
        "cache_max_mb", "cache_enabled", "max_age", "signing_keys", "require_signature",
        "max_pixels", "max_bytes", "max_output_pixels", "max_frames", "request_timeout_s",
        "concurrency", "face", "detector_workers", "detector_queue", "detector_deadline_s",
        "detector_batch_window_ms", "detector_max_batch", "detector_rss_limit_mb", "log_level",
        "playground",
    }  # fmt: skip
    assert wanted <= set(st.field_names())


def test_defaults() -> None:
    s = load(environ={})
    assert (s.host, s.port, s.max_pixels, s.max_bytes) == (
        "127.0.0.1",
        8080,
        100_000_000,
        100 << 20,
    )
    assert s.root == st.demo_root() and (s.root / "astronaut.jpg").is_file()
    assert s.cache_dir == Path("~/.cache/focal/variants").expanduser()
    assert s.remote_prefixes == () and s.playground == "auto"


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "focal.toml"
    config.write_text('port = 9000\nmax_age = 60\nhost = "0.0.0.0"\nface = false\n')
    env = {"FOCAL_PORT": "9100", "FOCAL_MAX_AGE": "120"}
    args = parse_flags(["--port", "9200"])
    s = load(config=config, environ=env, args=args)
    assert s.port == 9200  # flag beats env and file
    assert s.max_age == 120  # env beats file
    assert s.host == "0.0.0.0" and s.face is False  # file beats defaults
    assert s.cache_max_mb == 1024  # default shows through


def test_config_from_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("cache_max_mb = 7\n")
    assert load(environ={"FOCAL_CONFIG": str(config)}).cache_max_mb == 7


def test_lists_from_each_source(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('signing_keys = ["a", "b"]\n')
    assert load(config=config, environ={}).signing_keys == ("a", "b")
    env = {"FOCAL_REMOTE_PREFIXES": "https://a.example/img/, https://b.example/"}
    prefixes = ("https://a.example/img/", "https://b.example/")
    assert load(environ=env).remote_prefixes == prefixes
    args = parse_flags(["--signing-keys", "k1", "--signing-keys", "k,2"])
    assert load(environ={}, args=args).signing_keys == ("k1", "k,2")


def test_boolean_flags_and_words() -> None:
    assert load(environ={}, args=parse_flags(["--no-face"])).face is False
    assert load(environ={"FOCAL_FACE": "off"}).face is False
    assert load(environ={"FOCAL_FACE": "off"}, args=parse_flags(["--face"])).face is True


def test_unknown_config_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 80\n")
    with pytest.raises(SettingsError, match="'prot'"):
        load(config=config, environ={})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FOCAL_PORT": "eighty"}, ["port", "FOCAL_PORT", "eighty"]),
        ({"FOCAL_FACE": "maybe"}, ["face", "true or false", "maybe"]),
        ({"FOCAL_CACHE_MAX_MB": "-1"}, ["cache_max_mb", "-1"]),
        ({"FOCAL_LOG_LEVEL": "loud"}, ["log_level", "loud"]),
        (
            {"FOCAL_DETECTOR_RUNTIME": "tensorflow"},
            ["detector_runtime", "one of auto, onnxruntime, openvino, torch", "tensorflow"],
        ),
        ({"FOCAL_DETECTOR_PRECISION": "int8"}, ["detector_precision", "fp32, bf16, f16", "int8"]),
        ({"FOCAL_DETECTOR_MAX_SIDE": "2048"}, ["detector_max_side", "256 to 1024", "2048"]),
        ({"FOCAL_DETECTOR_MAX_SIDE": "100"}, ["detector_max_side", "256 to 1024", "100"]),
    ],
)
def test_bad_values_name_setting_source_and_value(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(SettingsError) as info:
        load(environ=env)
    for word in words:
        assert word in info.value.public


def test_the_detection_side_reaches_the_workers_detector() -> None:
    from focal.server.detection.start import detector_config

    assert detector_config(load(environ={"FOCAL_DETECTOR_MAX_SIDE": "640"})).max_side == 640
    assert detector_config(load(environ={})).max_side == 1024


def test_configuration_doc_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    regenerate = "run: python -m focal.server.settings > docs/configuration.md"
    assert doc == settings_docs.markdown(), regenerate
    for setting in SETTINGS:
        assert f"`{setting.env}`" in doc and f"`{setting.flag}`" in doc


def test_cli_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "focal", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    flat = " ".join(out.split())
    for setting in SETTINGS:
        assert setting.flag in out, setting.flag
        assert setting.env in flat, setting.env


def test_settings_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


# ---- signing never fails open ------------------------------------------------------------------


@pytest.mark.parametrize("value", [" , ", "", ",", "good-key,", "good-key, ,other", "   "])
def test_empty_signing_keys_in_the_environment_are_refused(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(environ={"FOCAL_SIGNING_KEYS": value})
    assert "signing_keys (FOCAL_SIGNING_KEYS)" in raised.value.public
    assert "non-empty keys" in raised.value.public


@pytest.mark.parametrize("keys", ['[""]', '["good", " "]', "[]"])
def test_empty_signing_keys_in_a_config_file_are_refused(tmp_path: Path, keys: str) -> None:
    config = tmp_path / "focal.toml"
    config.write_text(f"signing_keys = {keys}\n")
    with pytest.raises(SettingsError, match="signing_keys"):
        load(config=config, environ={})


def test_a_settings_record_with_an_empty_key_cannot_be_made() -> None:
    with pytest.raises(SettingsError, match="non-empty keys for signing_keys"):
        Settings(signing_keys=("good", ""))


def test_serve_refuses_to_start_with_an_empty_signing_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOCAL_")}
    env["FOCAL_SIGNING_KEYS"] = " , "
    done = subprocess.run(
        [sys.executable, "-m", "focal", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "signing_keys" in done.stderr


def test_deployment_docs_carry_the_current_limits_table() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text()
    regenerate = "regenerate: python -m focal.server.settings --limits"
    assert settings_docs.limits_markdown() in page, regenerate


def test_every_limit_says_what_it_protects_against() -> None:
    limits = {s.name for s in SETTINGS if s.group == "limits"}
    assert limits <= set(settings_docs.PROTECTS)
    assert set(settings_docs.PROTECTS) <= {s.name for s in SETTINGS}
