#!/usr/bin/env bash
# Creates .venv (if missing), installs focal into it (idempotent), and installs the face model
# into the model cache (`focal models fetch`: a no-op when it is already there).
# Usage: source scripts/setup.sh [extras]   e.g. "test"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
VENV_PY="$ROOT/.venv/bin/python"
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
# the distribution was called "focal" before it became "focal-images": drop an old editable install
rm -rf "$ROOT/src/focal.egg-info"
if "$VENV_PY" -m pip show --quiet focal >/dev/null 2>&1; then
  "$VENV_PY" -m pip uninstall --quiet --yes focal
fi
"$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$SPEC"
"$VENV_PY" -m focal models fetch
