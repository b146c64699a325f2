#!/usr/bin/env bash
# Installs the gateway with the embedded model and starts it on 127.0.0.1:8000: no API key, no Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --local
# Auth is turned off explicitly, and the bind stays on loopback: a laptop default, not a deployment.
export GATEWAY_AUTH=${GATEWAY_AUTH:-off}
exec .venv/bin/embedding-gateway serve --host 127.0.0.1 "$@"
