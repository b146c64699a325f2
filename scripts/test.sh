#!/usr/bin/env bash
# Installs everything the tests need (redis-server through apt-get when missing, the package with its
# local and dev extras) and runs the linters, the dependency audit and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
bash scripts/install.sh --local --dev
. .venv/bin/activate
ruff check app bench tests
mypy -p app
# Known vulnerabilities in the pinned versions fail the run (policy in scripts/audit_deps.py).
python scripts/audit_deps.py
python -m pytest "$@"
