"""Every module docs/architecture.md names exists, and it is linked from the README; every
benchmark script a document names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
# focal/face/sessions.py, or focal.face.sessions (a module, a package, or a name inside one)
PATH = re.compile(r"\bfocal/[\w/]+\.py\b")
DOTTED = re.compile(r"\bfocal(?:\.\w+)+")


def named_paths(text: str) -> set[str]:
    return set(PATH.findall(text))


def named_modules(text: str) -> set[str]:
    return set(DOTTED.findall(text))


def exists(dotted: str) -> bool:
    """The module or package, or a module holding the last part (focal.geometry.INFERENCE_CAP)."""
    parts = dotted.split(".")
    for end in (len(parts), len(parts) - 1):
        base = ROOT / "src" / Path(*parts[:end])
        if end and (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
            return True
    return False


def test_the_document_names_modules() -> None:
    text = DOC.read_text()
    assert len(named_paths(text)) >= 30
    assert "focal.face.sessions" in named_modules(text)


def test_every_named_module_path_exists() -> None:
    missing = sorted(p for p in named_paths(DOC.read_text()) if not (ROOT / "src" / p).is_file())
    assert missing == []


def test_every_named_dotted_module_exists() -> None:
    missing = sorted(m for m in named_modules(DOC.read_text()) if not exists(m))
    assert missing == []


def test_the_readme_links_it() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()


# benchmarks/experiments/int8.py, benchmarks/ipx_server.cjs: a script the reader is told to run
BENCHMARK_SCRIPT = re.compile(r"\bbenchmarks/[\w/]+\.(?:py|cjs)\b")


def benchmark_scripts_named() -> dict[str, set[str]]:
    """Per file (the docs, the READMEs, benchmarks/NOTES.md, the benchmarks and tests themselves):
    the benchmark scripts it names."""
    bench = ROOT / "benchmarks"
    files = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    for folder, pattern in ((bench, "*.md"), (bench, "*.py"), (bench / "experiments", "*.py")):
        files += sorted(folder.glob(pattern))
    files += sorted((ROOT / "tests").glob("*.py"))
    found = {str(f.relative_to(ROOT)): set(BENCHMARK_SCRIPT.findall(f.read_text())) for f in files}
    return {name: paths for name, paths in found.items() if paths}


def test_every_benchmark_script_the_docs_name_exists() -> None:
    named = benchmark_scripts_named()
    assert "benchmarks/run_all.py" in named["docs/benchmarks.md"]
    missing = {
        name: sorted(p for p in paths if not (ROOT / p).is_file()) for name, paths in named.items()
    }
    assert {name: paths for name, paths in missing.items() if paths} == {}
