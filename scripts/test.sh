#!/usr/bin/env bash
# Set up everything (venv, extras, redis-server, chromium, JupyterHub's proxy) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
NB_MODEL_SYSTEM_DEPS=1 bash scripts/setup.sh "test,redis,browser,local,hub"
# Every part was just installed, so a test that finds one missing fails instead of skipping.
NB_MODEL_STRICT=1 .venv/bin/python -m pytest "$@"
