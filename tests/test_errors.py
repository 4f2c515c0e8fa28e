"""Every error class has a status, and a section in docs/errors.md that its ``docs`` names."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from focal import errors

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def error_classes() -> list[type[errors.FocalError]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.FocalError)
    ]


def test_every_error_class_has_its_own_section_in_the_docs() -> None:
    anchors = {heading.lower() for heading in re.findall(r"^## (\w+)$", DOCS.read_text(), re.M)}
    seen = set()
    for kind in error_classes():
        path, _, anchor = kind.docs.partition("#")
        assert path == "docs/errors.md"
        assert anchor == kind.__name__.lower(), kind
        assert anchor in anchors, f"docs/errors.md has no section for {kind.__name__}"
        seen.add(anchor)
    assert len(seen) == len(error_classes())


def test_the_tree_in_the_docstring_names_every_class() -> None:
    for kind in error_classes():
        assert kind.__name__ in (errors.__doc__ or ""), kind


def test_statuses_are_http_error_statuses() -> None:
    for kind in error_classes():
        assert 400 <= kind.status <= 599
