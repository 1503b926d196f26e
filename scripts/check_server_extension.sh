#!/usr/bin/env bash
# CI step: `pip install .` into a fresh venv, then `jupyter server extension list` must show
# nb_model enabled (by the config file the build installs) and importable ("OK"), and
# `jupyter labextension list` the JupyterLab extension the build made from src/ (no prebuilt copy).
# With --editable: the same check after scripts/setup.sh (`pip install -e .`, which skips that
# config file, so setup.sh copies it) in a copy of the source.
# Usage: scripts/check_server_extension.sh [SOURCE_DIR] [--editable]   (PYTHON=python3.x: the interpreter)
set -euo pipefail
SRC="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
MODE="${2:-}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# build from a copy so the source tree gets no build/ or *.egg-info
mkdir -p "$WORK/src" "$WORK/home"
cp -r "$SRC/pyproject.toml" "$SRC/nb_model" "$SRC/jupyter-config" "$SRC/scripts" "$SRC/src" "$SRC/style" \
  "$SRC/package.json" "$SRC/yarn.lock" "$SRC/.yarnrc.yml" "$SRC/tsconfig.json" "$SRC/install.json" "$WORK/src/"
rm -rf "$WORK/src/nb_model/labextension"  # as in a fresh clone: the build must make it
for extra in README.md LICENSE; do
  if [ -f "$SRC/$extra" ]; then cp "$SRC/$extra" "$WORK/src/"; fi
done

if [ "$MODE" = --editable ]; then
  PYTHON="$PYTHON" NB_MODEL_SYSTEM_DEPS=0 bash "$WORK/src/scripts/setup.sh" ""
  ln -s "$WORK/src/.venv" "$WORK/venv"
  WHAT="pip install -e (scripts/setup.sh)"
else
  "$PYTHON" -m venv "$WORK/venv"
  "$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$WORK/src"
  test -f "$WORK/venv/etc/jupyter/jupyter_server_config.d/nb_model.json" \
    || { echo "FAIL: the build did not install etc/jupyter/jupyter_server_config.d/nb_model.json"; exit 1; }
  WHAT="pip install"
fi

# only the fresh environment's config counts: no user or JUPYTER_* overrides
env -u JUPYTER_CONFIG_DIR -u JUPYTER_CONFIG_PATH -u JUPYTER_PATH HOME="$WORK/home" \
  "$WORK/venv/bin/jupyter" server extension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$WORK/list.txt"
cat "$WORK/list.txt"
grep -Eq '^[[:space:]]*nb_model[[:space:]]+enabled' "$WORK/list.txt" \
  || { echo "FAIL: nb_model is not listed as enabled"; exit 1; }
grep -Eq '^[[:space:]]*nb_model[[:space:]].*OK' "$WORK/list.txt" \
  || { echo "FAIL: nb_model did not validate (import of nb_model.server failed?)"; exit 1; }
env -u JUPYTER_CONFIG_DIR -u JUPYTER_CONFIG_PATH -u JUPYTER_PATH HOME="$WORK/home" \
  "$WORK/venv/bin/jupyter" labextension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$WORK/lab.txt"
cat "$WORK/lab.txt"
grep -Eq '^[[:space:]]*nb_model v[0-9.]+[[:space:]]+enabled[[:space:]]+OK' "$WORK/lab.txt" \
  || { echo "FAIL: the nb_model JupyterLab extension is not listed as enabled and OK"; exit 1; }
echo "PASS: nb_model server extension enabled after $WHAT"
echo "PASS: nb_model JupyterLab extension enabled after $WHAT"
