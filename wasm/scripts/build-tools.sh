# Sourced by build.sh and test.sh (from wasm/): installs what building the package needs, only
# what is missing: the wasm32 target, wasm-bindgen-cli 0.2.130 (the version wasm-bindgen is pinned
# to in Cargo.toml; `cargo install`, a few minutes, once) and the npm packages locked in
# wasm/package-lock.json (binaryen's wasm-opt).
WB_VERSION=0.2.130

ensure_build_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== installing the wasm32-unknown-unknown target (rustup)"
    rustup target add wasm32-unknown-unknown
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WB_VERSION" ]; then
    echo "== installing wasm-bindgen-cli $WB_VERSION (a few minutes, once)"
    cargo install -q wasm-bindgen-cli --version "$WB_VERSION"
  fi
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm are required (e.g. apt-get install nodejs npm)" >&2
    return 1
  }
  local stamp=node_modules/.concord-install-stamp want
  want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== npm ci (wasm)"
    npm ci --ignore-scripts --no-audit --no-fund
    printf '%s' "$want" >"$stamp"
  fi
}
