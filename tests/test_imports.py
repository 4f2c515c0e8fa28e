"""The shape of focal's import graph, read from the source (every module parsed, no imports run).

* no import cycle among focal's modules (imports inside functions count too);
* the core (options, geometry, steps, decode, encode, the pipeline's modules, detection, errors,
  files) never imports the face wing (focal.face);
* the face wing reaches into the rest of focal only for focal.detection, focal.geometry,
  focal.errors and focal.files;
* focal.face.sessions is the only module that imports an inference runtime or the torch path.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = (
    *("options", "option_values", "option_parsers", "option_draw", "option_table"),
    *("cloudflare_options", "geometry", "boxes", "published_crop", "placement"),
    *("steps", "decode", "encode", "pipeline", "detection", "errors"),
)
PIPELINE = ("control", "source", "detection_input", "render", "describe")
CORE_MODULES = {f"focal.{name}" for name in (*CORE, *PIPELINE, "files")}
FACE_MAY_IMPORT = {"focal.detection", "focal.geometry", "focal.errors", "focal.files"}
RUNTIMES = ("onnxruntime", "openvino")
TORCH_PATH = ("focal.face.torch_detector",)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "focal").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Every module name an import statement of the module names, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """focal module -> the focal modules it imports (``from focal import x`` counts as x)."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target in imported_names(name, path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("focal"):
                edges[name].add(target)
    for name in edges:  # a package's __init__ is not an import of the package's modules
        edges[name].discard("focal")
    return edges


def external(name: str) -> set[str]:
    """Top-level packages outside focal the module imports."""
    path = modules()[name]
    return {t.split(".")[0] for t in imported_names(name, path) if t and not t.startswith("focal")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "focal.face.sessions" in edges["focal.server.detection.start"]
    assert "focal.face.retinaface" in edges["focal.face.detector"]
    assert "focal.face.torch_detector" in edges["focal.face.sessions"]  # the lazy import counts


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_the_face_wing() -> None:
    edges = graph()
    wrong = {m: sorted(t for t in edges[m] if t.startswith("focal.face")) for m in CORE_MODULES}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_face_wing_imports_only_what_it_may_from_the_rest() -> None:
    edges = graph()
    reached = {
        target
        for name, targets in edges.items()
        if name.startswith("focal.face")
        for target in targets
        if not target.startswith("focal.face")
    }
    assert reached <= FACE_MAY_IMPORT


def test_only_sessions_imports_a_runtime_or_the_torch_path() -> None:
    edges = graph()
    runtimes = {name for name in modules() if external(name) & set(RUNTIMES)}
    assert runtimes == {"focal.face.sessions"}
    torch_users = {n for n, targets in edges.items() if targets & set(TORCH_PATH)}
    assert torch_users == {"focal.face.sessions"}
    torch_importers = {name for name in modules() if "torch" in external(name)}
    assert torch_importers == {
        "focal.face.torch_graph",
        "focal.face.torch_postprocess",
        "focal.face.torch_detector",
    }
