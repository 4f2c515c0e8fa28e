"""Where the playground is open, over a real ``focal serve``: by default only on a loopback
address (a server on a public address has none), and where it is open it obeys presets_only (no
originals, no options but a preset's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.live import Live, serve
from tests.test_server import DEMO

from focal.server import playground
from focal.server.app import build_routes
from focal.server.settings import Settings

PRESETS = json.dumps({"anon": "width=200,redact=faces", "thumb": "width=120"})
PLAYGROUND_PATHS = {"/playground/samples", "/playground/original/{name}", "/playground/transform"}


def root_folder(folder: Path) -> Path:
    root = folder / "root"
    root.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(DEMO / name, root / name)
    return root


@pytest.mark.parametrize(
    ("host", "setting", "on"),
    [
        ("127.0.0.1", "auto", True),
        ("::1", "auto", True),
        ("localhost", "auto", True),
        ("0.0.0.0", "auto", False),
        ("::", "auto", False),
        ("203.0.113.7", "auto", False),
        ("images.example", "auto", False),
        ("0.0.0.0", "on", True),
        ("127.0.0.1", "off", False),
    ],
)
def test_the_playground_is_on_for_loopback_only_unless_set(
    host: str, setting: str, on: bool
) -> None:
    settings = Settings(host=host, playground=setting, cache_enabled=False)
    paths = {getattr(route, "path", None) for route in build_routes(settings)}
    assert (PLAYGROUND_PATHS <= paths) is on
    assert playground.enabled(settings) is on


@pytest.fixture(scope="module")
def presets_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("presets-only")
    args = ["--root", str(root_folder(folder)), "--cache-dir", str(folder / "cache"), "--no-face"]
    env = {"FOCAL_PRESETS": PRESETS, "FOCAL_PRESETS_ONLY": "true"}
    live = serve(folder, args, env)  # on 127.0.0.1, playground auto: on
    yield live
    live.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_presets_only_serves_no_original_through_the_playground(presets_only: Live) -> None:
    assert httpx.get(presets_only.url("/playground/samples"), timeout=30).status_code == 200
    original = httpx.get(presets_only.url("/playground/original/astronaut.jpg"), timeout=30)
    assert original.status_code == 403
    assert (DEMO / "astronaut.jpg").read_bytes()[:64] not in original.content


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "options", ["width=2000,height=2000,fit=pad,blur=250", "", "width=10", "thumb,blur=250"]
)
def test_presets_only_runs_no_arbitrary_options_on_uploads(
    presets_only: Live, options: str
) -> None:
    response = httpx.post(
        presets_only.url("/playground/transform"),
        params={"options": options},
        content=(DEMO / "coffee.jpg").read_bytes(),
        timeout=60,
    )
    assert response.status_code in (400, 403), response.text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_presets_only_runs_a_preset_on_an_upload(presets_only: Live) -> None:
    response = httpx.post(
        presets_only.url("/playground/transform"),
        params={"options": "thumb"},
        content=(DEMO / "coffee.jpg").read_bytes(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["description"]["width"] == 120


PUBLIC_CHECK = textwrap.dedent(
    """
    import sys, pathlib, httpx
    sys.path.insert(0, sys.argv[1])
    from tests.live import serve
    live = serve(pathlib.Path(sys.argv[2]), ["--host", "0.0.0.0", "--root", sys.argv[3],
                                             "--no-cache-enabled", "--no-face"])
    try:
        codes = [httpx.get(live.url(p), timeout=30).status_code
                 for p in ("/playground/samples", "/playground/original/astronaut.jpg")]
        codes.append(httpx.post(live.url("/playground/transform?options=width=10"),
                                content=b"x", timeout=30).status_code)
        index = httpx.get(live.url("/"), timeout=30)
        print(codes, index.headers["content-type"])
    finally:
        live.stop()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_server_on_a_public_address_has_no_playground(tmp_path: Path) -> None:
    """``focal serve --host 0.0.0.0`` with the default settings, in a network namespace of its
    own (root only): nothing outside the test can reach it."""
    root = root_folder(tmp_path)
    tests_parent = str(Path(__file__).resolve().parents[1])
    script = f"ip link set lo up && {sys.executable} -c '{PUBLIC_CHECK}' "
    script += f"{tests_parent} {tmp_path} {root}"
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"a network namespace needs root: {done.stderr}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[404, 404, 404] application/json", done.stdout
