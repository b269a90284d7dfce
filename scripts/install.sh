#!/usr/bin/env bash
# Create .venv and install xmodal with its runtime dependencies (no torch needed at runtime).
# Usage: bash scripts/install.sh [extra,extra]   e.g. bash scripts/install.sh torch,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
if [[ ",$extras," == *",torch,"* ]]; then
  # The CPU wheel, before anything that depends on torch: a bare `torch` requirement would
  # otherwise pull a multi-GB CUDA build. Never torchvision (breaks transformers imports here).
  pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
fi
pip install -q -e ".${extras:+[$extras]}" 2>&1 | grep -v "is ignored" || true
python -c "import xmodal; print('xmodal', xmodal.__version__, 'installed in .venv')"
