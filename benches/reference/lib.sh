# Shared by the benchmark scripts of this directory (sourced, not run).

# Installs the locked npm packages when package.json, the lockfile or node changed.
npm_install_locked() {
  local stamp_file=node_modules/.concord-install-stamp want
  want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
  if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$want" ]; then
    npm ci --ignore-scripts --no-audit --no-fund >/dev/null
    printf '%s' "$want" >"$stamp_file"
  fi
}

# A free TCP port on 127.0.0.1 (for servers that cannot be given port 0).
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# Waits (10 s at most) until LOG has a line containing "listening"; prints the log otherwise.
wait_listening() { for _ in $(seq 1 200); do grep -q "listening" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

# The first ws:// address printed in LOG (host:port and any path).
ws_address() { grep -o 'ws://[^ )]*' "$1" | head -1; }

# Server on CPU 0, load generator on CPU 1, when taskset and two CPUs are there.
PIN_SERVER=(); PIN_CLIENT=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_CLIENT=(taskset -c 1)
fi
