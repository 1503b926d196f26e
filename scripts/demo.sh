#!/usr/bin/env bash
# Set up nb_model and run the quickstart notebook headless on the embedded sandbox; print what it streamed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test"
.venv/bin/python -m nb_model.cli demo notebooks/01-quickstart.ipynb
