#!/usr/bin/env bash
# The main job: install what is needed, then serve the bundled demo images on http://127.0.0.1:8080
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/focal" serve --root "$ROOT/src/focal/demo" "$@"
