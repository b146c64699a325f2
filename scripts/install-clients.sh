#!/usr/bin/env bash
# Installs the client matrix of tests/clients/ (issues 15 and 23), each client from its own registry:
# - Python clients (LangChain, LlamaIndex, litellm, openai, dashscope, haystack, dspy, pydantic-ai, mem0,
#   openapi-python-client) into .venv-clients, from the pinned
#   tests/clients/requirements.txt: a virtualenv of their own, because these frameworks pin many packages
#   that the gateway's .venv pins differently;
# - the npm packages of tests/clients/node (npm ci, from package-lock.json): the openai SDK, LangChain JS, the
#   Vercel AI SDK, and the client generators of tests/clients/test_generated_clients.py (openapi-typescript +
#   openapi-fetch, @hey-api/openapi-ts, typescript); with them Node.js 22 (the `node` package, whose binary
#   comes from the npm registry too), which LangChain JS, the AI SDK and hey-api require (Debian has 20);
# - Go (Debian's golang-go) for the net/http client, a JDK (Debian's default-jdk-headless) for Java's
#   HttpClient run as a single-file program, and Node.js + npm, through apt-get when missing.
# Idempotent. Measured on a 2-core machine: about 2 min for a new .venv-clients (issue 23's four frameworks
# added 59 s into an existing one), a few seconds after that; npm ci 43 s (8 s before issue 23's packages).
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
