#!/usr/bin/env bash
# CI step: `pip install .` into a fresh venv, then `jupyter server extension list` must show
# nb_model enabled (by the config file the build installs) and importable ("OK").
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
cp -r "$SRC/pyproject.toml" "$SRC/nb_model" "$SRC/jupyter-config" "$SRC/scripts" "$WORK/src/"
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
echo "PASS: nb_model server extension enabled after $WHAT"
