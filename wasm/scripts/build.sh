#!/usr/bin/env bash
# Builds the browser package into wasm/pkg:
#   pkg/web     ES module for browsers and bundlers (`import init, { Repo } from ".../concord_wasm.js"`)
#   pkg/nodejs  CommonJS for Node (`require(".../concord_wasm.js")`)
# each with .d.ts typings and a package.json, the .wasm optimised with wasm-opt (npm `binaryen`,
# pinned in wasm/package-lock.json). Its last line is the size of the .wasm it built, measured.
# Installs what is missing first (scripts/build-tools.sh: the wasm32 target, wasm-bindgen-cli
# 0.2.130, `npm ci` in wasm/).
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_DIR=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASM_DIR/../target}"
# shellcheck source=build-tools.sh
source scripts/build-tools.sh
ensure_build_tools

# Size-oriented release profile for this build only (the workspace profile is left alone).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_PANIC=abort
cargo build -q -p concord-wasm --release --target wasm32-unknown-unknown --lib
raw="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/concord_wasm.wasm"

version=$(cargo metadata --format-version 1 --no-deps | node -e '
  let s = ""; process.stdin.on("data", c => (s += c)).on("end", () => {
    const p = JSON.parse(s).packages.find(p => p.name === "concord-wasm"); console.log(p.version); });')

rm -rf pkg
for target in web nodejs; do
  out="pkg/$target"
  wasm-bindgen --target "$target" --out-dir "$out" --typescript "$raw"
  # Both targets get the same module; optimise it once (wasm-opt from npm runs in Node: ~45 s).
  if [ "$target" = nodejs ] && cmp -s "$out/concord_wasm_bg.wasm" pkg/.unoptimised.wasm; then
    cp pkg/web/concord_wasm_bg.wasm "$out/concord_wasm_bg.wasm"
  else
    cp "$out/concord_wasm_bg.wasm" pkg/.unoptimised.wasm
    node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-reference-types --enable-multivalue --enable-mutable-globals \
      "$out/concord_wasm_bg.wasm" -o "$out/concord_wasm_bg.wasm"
  fi
  if [ "$target" = web ]; then type=module; else type=commonjs; fi
  cat >"$out/package.json" <<JSON
{
  "name": "concord-wasm",
  "version": "$version",
  "description": "Concord sync engine in the browser: IndexedDB storage, WebSocket sync, automerge-repo protocol v1",
  "license": "MIT OR Apache-2.0",
  "type": "$type",
  "main": "concord_wasm.js",
  "types": "concord_wasm.d.ts",
  "files": ["concord_wasm.js", "concord_wasm.d.ts", "concord_wasm_bg.wasm", "concord_wasm_bg.wasm.d.ts"],
  "sideEffects": false
}
JSON
done
rm -f pkg/.unoptimised.wasm
raw_size=$(stat -c %s "$raw")
opt_size=$(stat -c %s pkg/web/concord_wasm_bg.wasm)
gz_size=$(gzip -9c pkg/web/concord_wasm_bg.wasm | wc -c)
echo "concord_wasm_bg.wasm: $opt_size bytes after wasm-opt -Oz ($gz_size gzipped; $raw_size before)"
