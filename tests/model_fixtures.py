"""The installed face model for tests that run it: fails (never skips) when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from focal.face import models


def require_model() -> models.Installed:
    """The install in the model cache (FOCAL_MODEL_DIR or ~/.cache/focal/models)."""
    found = models.installed()
    if found is None:
        pytest.fail(
            f"face model missing in {models.default_model_dir()}: run `focal models fetch` "
            f"(or set {models.ENV_VAR})"
        )
    return found


def require_model_dir() -> Path:
    return require_model().directory
