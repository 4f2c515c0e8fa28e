from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACEDATA = Path(os.environ.get("FOCAL_FACEDATA", ROOT.parent / "shared" / "facedata"))
DEMO = ROOT / "src" / "focal" / "demo"


def facedata_manifest() -> list[dict[str, Any]]:
    """The labelled evaluation images (read in place, never copied)."""
    path = FACEDATA / "manifest.jsonl"
    if not path.exists():
        pytest.fail(f"evaluation data missing: {path} (set FOCAL_FACEDATA)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def facedata() -> Path:
    if not FACEDATA.is_dir():
        pytest.fail(f"evaluation data missing: {FACEDATA} (set FOCAL_FACEDATA)")
    return FACEDATA
