#!/usr/bin/env bash
# Build the JupyterLab extension (src/, style/) into nb_model/labextension, only when its inputs
# changed. node_modules is restored from ~/.cache/nb_model/node_modules/<hash of the manifests>
# (hard links, no download) and kept there after a fresh install. Needs node and jlpm on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "building the JupyterLab extension needs Node.js >= 18 (apt-get install nodejs)" >&2; exit 1; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
deps_key=$(hash_of package.json yarn.lock .yarnrc.yml)
build_key=$(hash_of package.json yarn.lock .yarnrc.yml tsconfig.json install.json $(find src style -type f | sort))
out=nb_model/labextension
rm -f "$out/install.json"  # the wheel adds the repository's install.json there itself: a second copy fails it
if [ -f "$out/static/style.js" ] && [ "$(cat "$out/.build-key" 2>/dev/null)" = "$build_key" ]; then
  exit 0
fi
cache="${NB_MODEL_NODE_CACHE:-$HOME/.cache/nb_model/node_modules}/$deps_key"
if [ "$(cat node_modules/.nb-model-key 2>/dev/null)" != "$deps_key" ]; then
  rm -rf node_modules
  if [ -d "$cache" ]; then
    cp -al "$cache" node_modules 2>/dev/null || cp -a "$cache" node_modules
  else
    jlpm install
    mkdir -p "$(dirname "$cache")"
    rm -rf "$cache.tmp" && cp -al node_modules "$cache.tmp" 2>/dev/null || cp -a node_modules "$cache.tmp"
    mv "$cache.tmp" "$cache"
  fi
  echo "$deps_key" > node_modules/.nb-model-key
fi
jlpm build:prod
echo "$build_key" > "$out/.build-key"
