#!/usr/bin/env bash
# Create .venv and install nb_model with the extras named in $1 (e.g. "test,redis").
# System packages (redis-server, chromium, nodejs) are installed only when asked via NB_MODEL_SYSTEM_DEPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools
llama_wheel=
if [[ ",$extras," == *",local,"* ]]; then
  # llama-cpp-python compiles for minutes: build its wheel once and keep it outside the clone.
  # One known version, built portable: GGML_NATIVE=OFF compiles for AVX2/FMA/F16C, without AVX-512 or AMX.
  # (A native build on a CPU with AMX, compiled by GCC 12, dies of SIGSEGV on the first generation: GCC 12's
  # _tile_loadconfig declares that it reads 8 bytes of the tile configuration, so the optimizer drops the
  # stores of the rest and ldtilecfg faults on a half-written configuration.)
  llama_version=0.3.36  # within the `local` extra's range in pyproject.toml
  llama_cmake_args="-DGGML_NATIVE=OFF"
  wheels="${NB_MODEL_WHEELS:-$HOME/.cache/nb_model/wheels}"
  mkdir -p "$wheels"
  stamp="$wheels/llama_cpp_python-$llama_version.cmake-args"  # how the kept wheel was built
  llama_wheel=$(ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$llama_wheel" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$llama_cmake_args" ]; then
    echo "building llama-cpp-python $llama_version once (several minutes) into $wheels"
    build=$(mktemp -d "$wheels/.build.XXXXXX")
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and could hand back a build made without them
    CMAKE_ARGS="$llama_cmake_args" .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$build" \
      "llama-cpp-python==$llama_version" || { rm -rf "$build"; exit 1; }
    rm -f "$wheels"/llama_cpp_python-*.whl "$wheels"/llama_cpp_python-*.cmake-args  # other versions and builds
    mv "$build"/llama_cpp_python-*.whl "$wheels"/
    rmdir "$build"
    echo "$llama_cmake_args" > "$stamp"
    llama_wheel=$(ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl | head -n 1)
  fi
  export PIP_FIND_LINKS="$wheels ${PIP_FIND_LINKS:-}"
  export PIP_PREFER_BINARY=1  # take the kept wheel even when the index has a newer source release
fi
if [ "${NB_MODEL_SYSTEM_DEPS:-0}" = 1 ]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)  # builds the JupyterLab extension from source
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
fi
if [[ ",$extras," == *",hub,"* ]]; then
  # JupyterHub's proxy (configurable-http-proxy) comes from npm: kept in a cached prefix, found by the tests there
  chp="${NB_MODEL_CHP:-$HOME/.cache/nb_model/chp}"
  if ! command -v configurable-http-proxy >/dev/null && [ ! -x "$chp/node_modules/.bin/configurable-http-proxy" ]; then
    if ! command -v npm >/dev/null && [ "${NB_MODEL_SYSTEM_DEPS:-0}" = 1 ]; then
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
    fi
    if command -v npm >/dev/null; then
      mkdir -p "$chp"
      node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
      version=5; [ "$node_major" -ge 20 ] || version=4  # 5.x needs node >= 20
      npm install --no-audit --no-fund --prefix "$chp" "configurable-http-proxy@$version"
    else
      echo "npm not found: the JupyterHub tests need configurable-http-proxy (NB_MODEL_SYSTEM_DEPS=1 installs npm)"
    fi
  fi
fi
# The JupyterLab extension: built from src/ and style/ before the install (whose build hook then
# finds it built). node_modules is kept per hash of the npm manifests under ~/.cache/nb_model/.
.venv/bin/python -m pip install -q "jupyterlab>=4,<5" "jupyter-builder>=1.3"  # jlpm and the extension builder
PATH="$PWD/.venv/bin:$PATH" bash scripts/build_labextension.sh
if [ -n "$llama_wheel" ]; then
  # the venv may hold another build of the same version, which pip would keep: install the kept wheel itself
  built=$(sha256sum "$llama_wheel" | cut -d' ' -f1)
  if [ "$(cat .venv/llama_cpp_python.sha256 2>/dev/null)" != "$built" ]; then
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$llama_wheel"
    echo "$built" > .venv/llama_cpp_python.sha256
  fi
fi
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}" ${llama_wheel:+"llama-cpp-python==$llama_version"}
# an editable install links the built extension where JupyterLab looks for it
.venv/bin/jupyter-builder develop --overwrite . >/dev/null
# an editable install skips the data-files: put the file that enables the server extension where
# `pip install .` would (`jupyter server extension enable` refuses an extension no config lists yet)
mkdir -p .venv/etc/jupyter/jupyter_server_config.d
cp jupyter-config/jupyter_server_config.d/nb_model.json .venv/etc/jupyter/jupyter_server_config.d/
