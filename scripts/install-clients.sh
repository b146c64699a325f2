#!/usr/bin/env bash
# Installs the client matrix of tests/clients/test_clients.py (issue 15), each client from its own registry:
# - Python clients (LangChain, LlamaIndex, litellm, openai, dashscope) into .venv-clients, from the pinned
#   tests/clients/requirements.txt: a virtualenv of their own, because these frameworks pin many packages
#   that the gateway's .venv pins differently;
# - the openai npm package into tests/clients/node/node_modules (npm ci, from package-lock.json);
# - Go (Debian's golang-go) for the net/http client, a JDK (Debian's default-jdk-headless) for Java's
#   HttpClient run as a single-file program, and Node.js + npm, through apt-get when missing.
# Idempotent. Measured on a 2-core machine: about 2 min for a new .venv-clients, a few seconds after that.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
{ command -v java && command -v javac; } >/dev/null 2>&1 || need+=(default-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv-clients/bin/python ] || "$PY" -m venv .venv-clients
export PIP_DISABLE_PIP_VERSION_CHECK=1
timeout 1200 .venv-clients/bin/pip install -q -r tests/clients/requirements.txt
timeout 600 npm ci --prefix tests/clients/node --no-audit --no-fund --loglevel=error
