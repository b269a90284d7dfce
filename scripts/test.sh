#!/usr/bin/env bash
# Install everything the tests need into .venv, then run the whole offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh torch,openvino,ray,dev
# The browser tests drive Debian's Chromium through Playwright; no browser build is ever downloaded.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "chromium is missing: run 'sudo apt-get install -y chromium' (the browser tests skip without it)" >&2
  fi
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
. .venv/bin/activate
python -m pytest -q "$@"
