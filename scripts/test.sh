#!/usr/bin/env bash
# Installs everything the tests need (idempotent), then runs the linters and the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x /usr/bin/redis-server ]; then  # the shared detection cache's tests run a real one
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
bash scripts/setup.sh test
# object storage, Redis and Ray: the scaling tests' extras (docs/scaling.md)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[scale-test,crawlers]"
# the torch runtime's tests run on the CPU build of torch (docs/gpu.md)
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
# the JavaScript URL builder's tests, and the web frameworks' URL builders the Python tests run
(cd js && node --test)
(cd tests/frameworks && npm ci --no-audit --no-fund --omit=peer --loglevel=error)
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
