"""The container recipe's invariants, read from the files (scripts/container.sh builds and runs it).

The image runs as a non-root user, checks /healthz with Python, listens on the port it exposes,
keeps the playground off on its public bind, and names only real settings; deploy/compose.yaml
parses and names only real settings too; everything the Dockerfile copies is in a fresh checkout
and gets through .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from focal.face import models
from focal.server import settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
# variables focal reads that are not server settings
OTHER_FOCAL_VARS = {models.ENV_VAR, "FOCAL_CONFIG"}
SETTING_VARS = {s.env for s in settings.SETTINGS}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def one(steps: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in steps if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def image() -> list[tuple[str, str]]:
    return final_stage(instructions(DOCKERFILE.read_text()))


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    steps = instructions("FROM a AS b\n# note\nRUN x \\\n    # inside\n    && y\nUSER 1\n")
    assert steps == [("FROM", "a AS b"), ("RUN", "x && y"), ("USER", "1")]


def test_the_image_runs_as_a_numeric_non_root_user(image: list[tuple[str, str]]) -> None:
    user, _, group = one(image, "USER").partition(":")
    assert user.isdigit() and int(user) != 0
    assert group == "" or int(group) != 0


def test_the_health_check_asks_healthz_with_python_on_the_serving_port(
    image: list[tuple[str, str]],
) -> None:
    check = one(image, "HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())  # exec form: a JSON array
    assert command[0] == "python" and "/healthz" in command[-1]
    assert "FOCAL_PORT" in command[-1]
    assert "curl" not in check and "wget" not in check


def test_the_public_defaults(image: list[tuple[str, str]]) -> None:
    env = env_of(image)
    assert env["FOCAL_HOST"] == "0.0.0.0"
    assert one(image, "EXPOSE") == env["FOCAL_PORT"] == "8080"
    assert env["FOCAL_PLAYGROUND"] == "off"
    values = settings.from_env(env)  # every value converts (a wrong type raises)
    assert values["playground"] == "off" and values["port"] == 8080
    volumes = json.loads(one(image, "VOLUME"))
    assert env["FOCAL_ROOT"] in volumes and env["FOCAL_CACHE_DIR"] in volumes
    assert json.loads(one(image, "CMD")) == ["focal", "serve"]


def test_the_image_names_only_real_variables() -> None:
    named = set(re.findall(r"\bFOCAL_[A-Z0-9_]+", DOCKERFILE.read_text()))
    assert named and named <= SETTING_VARS | OTHER_FOCAL_VARS


def test_the_model_is_baked_in_where_focal_looks(image: list[tuple[str, str]]) -> None:
    model_dir = env_of(image)[models.ENV_VAR]
    assert any(w == "COPY" and rest.endswith(" " + model_dir) for w, rest in image)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or its parents."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_every_copied_source_is_in_a_fresh_checkout_and_in_the_context() -> None:
    steps = instructions(DOCKERFILE.read_text())
    sources = []
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            sources += [s.rstrip("/") for s in rest.split()[:-1]]
    assert "src" in sources and "deploy/offline/wheels" in sources
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        inside = [f for f in tracked if f == source or f.startswith(source + "/")]
        assert inside, f"{source} is not in a fresh checkout"
        assert not dockerignored(source, patterns), f"{source} is left out by .dockerignore"
    assert dockerignored(".venv", patterns) and dockerignored("tests/test_container.py", patterns)


def test_the_compose_file_parses_and_names_only_real_settings() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"focal", "redis", "minio"} <= set(services)
    env = services["focal"]["environment"]
    named = {name for name in env if name.startswith("FOCAL_")}
    assert named <= SETTING_VARS, named - SETTING_VARS
    values = settings.from_env({k: str(v) for k, v in env.items() if "${" not in str(v)})
    assert values["cache_backend"] == "s3"
    # the shared caches point at services of the same file
    assert values["detection_cache_url"].split("//")[1].split(":")[0] in services
    assert values["s3_endpoint_url"].split("//")[1].split(":")[0] in services
    assert values["cache_s3_prefix"].startswith("s3://")
    assert services["focal"]["build"]["context"] == ".."
