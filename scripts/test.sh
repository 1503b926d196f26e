#!/usr/bin/env bash
# Set up everything (venv, extras, redis-server, chromium) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
NB_MODEL_SYSTEM_DEPS=1 bash scripts/setup.sh "test,redis,browser,local"
.venv/bin/python -m pytest "$@"
