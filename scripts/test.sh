#!/usr/bin/env bash
# Installs everything the tests need and runs the linters, the dependency audit and the whole test suite:
# - through apt-get when missing: redis-server (the cache in tests; also the cluster and, run as
#   `redis-server --sentinel`, the Sentinel of tests/support/redisfarm.py), openssl (the TLS tests' CA),
#   prometheus + promtool (the dashboards and alert rules are evaluated by a real Prometheus),
#   docker-compose (runs docker-compose.yml), docker.io (dockerd: the tests marked `docker` start their
#   own engine, on a socket of their own, and stop it) and debootstrap (the base images those tests
#   build; no container registry is reachable in CI), default-jdk-headless and curl (clients that offer
#   h2c: tests/clients/test_upgrade_offers.py);
# - the package with its local and dev extras, into .venv (scripts/install.sh, as the Dockerfile does);
# - the client matrix (scripts/install-clients.sh): .venv-clients, the openai npm package, golang-go, a JDK.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS Redis tests make their own CA
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v java >/dev/null 2>&1 || need+=(default-jdk-headless)  # the JDK's own HttpClient (h2c offers)
command -v curl >/dev/null 2>&1 || need+=(curl)  # curl --http2 (h2c offers)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash scripts/install.sh --local --dev
bash scripts/install-clients.sh
. .venv/bin/activate
ruff check app bench tests
mypy -p app
# Known vulnerabilities in the pinned versions fail the run (policy in scripts/audit_deps.py).
python scripts/audit_deps.py
python -m pytest "$@"
