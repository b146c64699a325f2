#!/usr/bin/env bash
# Installs the gateway into .venv (created if missing). Extras: --local (the embedded model), --dev (tests).
# --no-compile: pip does not byte-compile what it installs (scripts/test.sh: Python compiles what is imported,
# once, and keeps it; torch's own compile is about 25 s of CPU of which a test run imports a fraction).
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=()
compile=()
for arg in "$@"; do
  case "$arg" in
    --local) extras+=(local) ;;
    --dev) extras+=(dev) ;;
    --no-compile) compile=(--no-compile) ;;
    *) echo "usage: $0 [--local] [--dev] [--no-compile]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ " ${extras[*]} " == *" local "* ]]; then
  # torch first, pinned to its CPU build: sentence-transformers would otherwise pull PyPI's torch with
  # several GB of CUDA packages. TORCH_INDEX_URL (also the Dockerfile's build argument) names the index
  # that serves it, PyTorch's CPU index by default; set it empty when pip's own configuration finds the
  # wheel (a wheel directory, a mirror).
  torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
  if ! python -c "import torch" 2>/dev/null; then
    # --retries 1: where the index cannot be reached (a mirror-only or offline machine whose pip
    # configuration finds the wheel elsewhere) pip moves on at once instead of backing off five times per
    # package (minutes in all).
    pip install -q "${compile[@]}" --retries 1 "torch==2.13.0+cpu" ${torch_index:+--extra-index-url "$torch_index"}
  fi
fi
spec="."
if [ ${#extras[@]} -gt 0 ]; then
  spec=".[$(IFS=,; echo "${extras[*]}")]"
fi
pip install -q "${compile[@]}" -c constraints.txt -e "$spec"
