"""The face model cache: acquisition from the retinaface==1.1.1 wheel, conversion, lookup.

    fetch(model_dir)            pip download the wheel (the user's pip config applies), install
    install_wheel(wheel, dir)   the same offline, from a wheel file
    installed(model_dir)        the manifest of a complete, matching install, or None
    require(model_dir)          the installed model, or ModelMissingError

The cache dir holds the converted model, the original frozen graph beside it (the reference
for equivalence checks) and manifest.json, written last: an install without a manifest, or whose
hashes or converter version do not match, does not count. Nothing here runs at import time, and
only fetch touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from focal.errors import ModelInstallError, ModelMissingError
from focal.face import CONVERTER_VERSION
from focal.files import write_atomic

PACKAGE = "retinaface==1.1.1"
WHEEL_MEMBER = "retinaface/src/frozen_graph.pb"
SOURCE_SHA256 = "cf242e8627d0650d02bddbc8a8526944bc4dc69269bd2c1d1e43fb0930f95993"
MODEL_FILE = "retinaface_mnv2.onnx"
GRAPH_FILE = "retinaface_mnv2_frozen_graph.pb"
MANIFEST_FILE = "manifest.json"
ENV_VAR = "FOCAL_MODEL_DIR"
MISSING = "face model not installed: run `focal models fetch`"


@dataclass(frozen=True)
class Manifest:
    source_package: str
    source_member: str
    source_sha256: str
    converter_version: str
    model_file: str
    model_sha256: str
    graph_file: str
    created: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class Installed:
    directory: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.directory / self.manifest.model_file

    @property
    def graph_path(self) -> Path:
        return self.directory / self.manifest.graph_file


def default_model_dir() -> Path:
    """FOCAL_MODEL_DIR, else ~/.cache/focal/models."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else Path.home() / ".cache" / "focal" / "models"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    return sha256(path.read_bytes())


def _read_manifest(directory: Path) -> Manifest | None:
    try:
        fields = json.loads((directory / MANIFEST_FILE).read_text())
        return Manifest(**fields)
    except (OSError, ValueError, TypeError):
        return None


def _matches(directory: Path, manifest: Manifest) -> bool:
    if manifest.source_sha256 != SOURCE_SHA256 or manifest.converter_version != CONVERTER_VERSION:
        return False
    try:
        model_ok = file_sha256(directory / manifest.model_file) == manifest.model_sha256
        return model_ok and file_sha256(directory / manifest.graph_file) == SOURCE_SHA256
    except OSError:
        return False


def installed(model_dir: Path | None = None) -> Installed | None:
    """The install in model_dir when complete and matching this version of focal, else None."""
    directory = model_dir or default_model_dir()
    manifest = _read_manifest(directory)
    if manifest is None or not _matches(directory, manifest):
        return None
    return Installed(directory, manifest)


def require(model_dir: Path | None = None) -> Installed:
    found = installed(model_dir)
    if found is None:
        directory = model_dir or default_model_dir()
        raise ModelMissingError(MISSING, detail=f"{MISSING} (looked in {directory})")
    return found


def read_graph(wheel: Path) -> bytes:
    """The frozen graph out of the wheel, checked against its known SHA-256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelInstallError(f"cannot read {WHEEL_MEMBER} from {wheel}: {exc}") from exc
    digest = sha256(data)
    if digest != SOURCE_SHA256:
        raise ModelInstallError(
            f"{WHEEL_MEMBER} in {wheel} has SHA-256 {digest}, expected {SOURCE_SHA256}"
        )
    return data


def install_graph(graph: bytes, model_dir: Path | None = None) -> Installed:
    """Convert a checked frozen graph and write model, graph and manifest (manifest last)."""
    directory = model_dir or default_model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    from focal.face.convert import convert_bytes  # onnx, only when a model is installed

    model = convert_bytes(graph)
    manifest = Manifest(
        source_package=PACKAGE,
        source_member=WHEEL_MEMBER,
        source_sha256=SOURCE_SHA256,
        converter_version=CONVERTER_VERSION,
        model_file=MODEL_FILE,
        model_sha256=sha256(model),
        graph_file=GRAPH_FILE,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_atomic(directory / GRAPH_FILE, graph, durable=True)
    write_atomic(directory / MODEL_FILE, model, durable=True)
    write_atomic(directory / MANIFEST_FILE, manifest.to_json().encode(), durable=True)
    return Installed(directory, manifest)


def install_wheel(wheel: Path, model_dir: Path | None = None) -> Installed:
    """Offline install from a retinaface==1.1.1 wheel file."""
    return install_graph(read_graph(wheel), model_dir)


def download_wheel(destination: Path) -> Path:
    """`pip download --no-deps retinaface==1.1.1` into destination; the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-d", str(destination), PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(destination.glob("retinaface-1.1.1-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelInstallError(f"pip download {PACKAGE} failed: {done.stderr.strip()[-2000:]}")
    return wheels[0]


def fetch(model_dir: Path | None = None, force: bool = False) -> tuple[Installed, bool]:
    """Download and install unless a matching install is there; (install, whether it changed)."""
    current = None if force else installed(model_dir)
    if current is not None:
        return current, False
    with tempfile.TemporaryDirectory(prefix="focal-wheel-") as temporary:
        wheel = download_wheel(Path(temporary))
        return install_wheel(wheel, model_dir), True
