#!/usr/bin/env bash
# Install everything the tests need into .venv, then run the whole offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh torch,openvino,dev
. .venv/bin/activate
python -m pytest -q "$@"
