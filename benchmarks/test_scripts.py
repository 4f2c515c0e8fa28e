"""Every benchmark script starts: ``--help`` of each, run as the docs run it (a fresh interpreter
on the script's path, no pytest ``pythonpath``), exits 0 with a usage line. A broken import, a
helper moved without its importers, or a path that no longer resolves fails here, not in the
middle of a half-hour run.

.venv/bin/pytest benchmarks/test_scripts.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
FOLDERS = (BENCH, BENCH / "experiments")
# imported by the scripts, never run: a script's --help imports them
HELPERS = {"harness.py", "hostile.py", "loadgen.py", "gpu_anatomy.py"}
# run with the benchmarks' own environment (matplotlib), made by run_all.py
OWN_VENV = {"charts.py": BENCH / "work" / "venv" / "bin" / "python"}


def scripts() -> list[Path]:
    found = [
        path
        for folder in FOLDERS
        for path in sorted(folder.glob("*.py"))
        if not path.name.startswith(("test_", "conftest")) and path.name not in HELPERS
    ]
    return found


def test_every_script_is_a_script_or_a_known_helper() -> None:
    """A new file under benchmarks/ is either run (and so checked below) or named a helper."""
    for path in scripts():
        assert 'if __name__ == "__main__":' in path.read_text(), path.name
    for folder in FOLDERS:
        for name in HELPERS:
            path = folder / name
            assert not path.exists() or 'if __name__ == "__main__":' not in path.read_text()
    assert len(scripts()) >= 25


@pytest.mark.timeout(200)
@pytest.mark.parametrize("script", scripts(), ids=lambda p: str(p.relative_to(BENCH)))
def test_the_script_answers_help(script: Path, tmp_path: Path) -> None:
    python = OWN_VENV.get(script.name, Path(sys.executable))
    if not python.exists():
        pytest.skip(f"{python} missing: benchmarks/run_all.py makes it")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    done = subprocess.run(
        [str(python), str(script), "--help"],
        cwd=tmp_path,  # nothing a script writes on --help lands in the tree
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
    assert list(tmp_path.iterdir()) == []
