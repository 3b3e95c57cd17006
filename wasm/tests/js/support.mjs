// Shared by the JS tests of the wasm package: the test server's settings (exported by
// wasm/scripts/test.sh, which starts `concord serve`), a static file server on 127.0.0.1 for the
// editor and the package, and bounded waits.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The running `concord serve` (fails the test when the script did not start one). */
export function testServer() {
  const url = process.env.CONCORD_WASM_TEST_SERVER;
  const token = process.env.CONCORD_WASM_TEST_TOKEN;
  if (!url || !token) throw new Error("CONCORD_WASM_TEST_SERVER/TOKEN unset: run wasm/scripts/test.sh");
  return { url, token, syncUrl: `${url}?token=${encodeURIComponent(token)}` };
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
  ".css": "text/css", ".wasm": "application/wasm", ".json": "application/json" };

/** Serves the repository's files on 127.0.0.1 (port 0); resolves to `{base, close}`. */
export async function staticServer() {
  const server = createServer(async (req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = path.join(ROOT, path.normalize(rel));
    if (!file.startsWith(ROOT)) return res.writeHead(403).end();
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise(resolve => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return { base: `http://127.0.0.1:${port}`, close: () => new Promise(r => server.close(r)) };
}

/** Polls `f` every 50 ms until truthy, at most `ms`; throws naming `what`. */
export async function waitFor(f, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise(r => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (${last.message})` : ""}`);
}
