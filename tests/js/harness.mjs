// Shared harness for the JS interop tests: starts a real `concord serve` on port 0 with a temporary
// data directory, mints an access token for it with `concord token create`, connects stock
// automerge-repo clients to it (token in the URL, as browsers must), runs the `concord doc` CLI,
// and tears everything down. Every wait is bounded; nothing loops forever.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

import { HoldingProxy } from "./proxy.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The `concord` binary: `$CONCORD_BIN`, else the workspace's debug build. */
export const CONCORD_BIN = path.resolve(HERE, process.env.CONCORD_BIN ?? "../../target/debug/concord");

/** Upper bound for any single wait. */
export const WAIT_MS = 20_000;

/** Per-test timeout for `node:test` (a test does a few waits, each normally far below WAIT_MS). */
export const TEST_TIMEOUT_MS = 45_000;

const LISTENING = /concord listening on (http:\/\/\S+) \(WebSocket: (ws:\/\/\S+)\)/;
const DEV_TOKEN = /development token [^:]*: (\S+)/;

/**
 * A throwaway PostgreSQL server: the `temp-postgres` helper of the Rust test crate, next to the
 * `concord` binary (`initdb` + `pg_ctl` into a temporary directory, as `postgres` when root). It
 * stops its server when its standard input closes, so it never outlives this process.
 */
export class TempPostgres {
  static async start() {
    const bin = path.join(path.dirname(CONCORD_BIN), "temp-postgres");
    // Not in `live`: killing it would leave its server running. When this process ends, even by
    // SIGKILL, its standard input closes and it stops the server itself.
    const proc = spawn(bin, [], { env: childEnv(), stdio: ["pipe", "pipe", "inherit"] });
    const pg = new TempPostgres();
    pg.proc = proc;
    pg.exited = new Promise(resolve => proc.once("exit", resolve));
    let out = "";
    proc.stdout.setEncoding("utf8");
    pg.url = await withTimeout(
      new Promise((resolve, reject) => {
        proc.once("error", e => reject(new Error(`cannot start ${bin} (build it: cargo build -p concord-tests): ${e.message}`)));
        proc.once("exit", code => reject(new Error(`temp-postgres exited early (code ${code})`)));
        proc.stdout.on("data", chunk => {
          out += chunk;
          const m = /^URL (\S+)$/m.exec(out);
          if (m) resolve(m[1]);
        });
      }),
      "a throwaway PostgreSQL to start",
      60_000,
    );
    return pg;
  }

  /** Stops the server (and removes its directory), bounded. */
  async stop() {
    this.proc.stdin.end();
    await withTimeout(this.exited, "temp-postgres to stop its server", 30_000);
  }
}

/** Every server process still running, killed on exit whatever happened (safety net). */
const live = new Set();
process.on("exit", () => {
  for (const proc of live) proc.kill("SIGKILL");
});

/** The child's environment: ours without the CONCORD_* settings, so only explicit flags count. */
function childEnv(extra = {}) {
  const env = { NO_COLOR: "1" };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("CONCORD_") || k === "CONCORD_LOG") env[k] = v;
  }
  return { ...env, ...extra };
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `predicate` every 25 ms until it returns a truthy value, for at most `ms`. */
export async function waitFor(predicate, label, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const v = await predicate();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    await new Promise(r => setTimeout(r, 25));
  }
  const why = lastError ? ` (last error: ${lastError.message})` : "";
  throw new Error(`timed out after ${ms} ms waiting for: ${label}${why}`);
}

export const sleep = ms => new Promise(r => setTimeout(r, ms));

/** A deep copy of a document as plain JSON (what both sides must agree on). */
export const plain = doc => JSON.parse(JSON.stringify(doc));

/**
 * Runs `concord ARGS...` to completion; resolves to `{code, stdout, stderr}`. Killed after `ms`
 * (then rejects).
 */
export function runConcord(args, { ms = WAIT_MS, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(CONCORD_BIN, args, { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    proc.stdout.setEncoding("utf8").on("data", c => (stdout += c));
    proc.stderr.setEncoding("utf8").on("data", c => (stderr += c));
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`timed out after ${ms} ms: concord ${args.join(" ")}\nstderr: ${stderr}`));
    }, ms);
    proc.once("error", e => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${CONCORD_BIN}: ${e.message}`));
    });
    proc.once("close", code => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Like `runConcord` but fails unless the command exits 0; returns stdout. */
export async function runConcordOk(args, opts) {
  const r = await runConcord(args, opts);
  if (r.code !== 0) {
    throw new Error(`concord ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r.stdout;
}

/** A running `concord serve` process, with a full-access token minted for the tests. */
export class Server {
  constructor(proc, httpUrl, wsUrl, dataDir, logs) {
    this.proc = proc;
    this.httpUrl = httpUrl;
    /** The WebSocket URL as printed (no token). */
    this.wsUrl = wsUrl;
    this.dataDir = dataDir;
    this.logs = logs;
    /** A token for every document, read and write, with admin rights (set by `start`). */
    this.token = undefined;
    this.exited = new Promise(resolve => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode });
      else proc.once("exit", (code, signal) => resolve({ code, signal }));
    });
    this.exited.then(() => live.delete(proc));
  }

  /** The WebSocket URL with the token as a query parameter (how browsers authenticate). */
  get syncUrl() {
    return `${this.wsUrl}?token=${encodeURIComponent(this.token)}`;
  }

  /** The last lines the server wrote to stderr (for failure messages). */
  tail(n = 40) {
    return this.logs.join("").split("\n").slice(-n).join("\n");
  }

  /**
   * Starts `concord serve --bind 127.0.0.1:0 --data DIR`, waits for its "listening" line, then
   * mints a token with `concord token create` (the server has created its key file by then).
   */
  static async start(dataDir) {
    return Server.spawn(["--data", dataDir], dataDir, async server => {
      const out = await runConcordOk(["token", "create", "--data", dataDir, "--principal", "js-interop-tests", "--ttl", "1h", "--admin"]);
      return out.trim().split(/\s+/).pop();
    });
  }

  /**
   * Starts a cluster node: `concord serve --bind 127.0.0.1:0 --database URL --node-id ID --dev`;
   * its token is the development token it prints (signed with the cluster's key, in the
   * database: valid on every node).
   */
  static async startNode(databaseUrl, nodeId) {
    return Server.spawn(["--database", databaseUrl, "--node-id", nodeId, "--dev"], undefined, server =>
      waitFor(() => DEV_TOKEN.exec(server.stdout)?.[1], "the node's development token"),
    );
  }

  /** Spawns `concord serve --bind 127.0.0.1:0 ARGS`, waits for its listening line, then `token(server)`. */
  static async spawn(args, dataDir, token) {
    const logs = [];
    const proc = spawn(CONCORD_BIN, ["serve", "--bind", "127.0.0.1:0", ...args], {
      env: childEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(proc);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", chunk => {
      logs.push(chunk);
      if (process.env.CONCORD_TEST_VERBOSE) process.stderr.write(chunk);
    });
    proc.stdout.setEncoding("utf8");
    const server = new Server(proc, undefined, undefined, dataDir, logs);
    server.stdout = "";
    const listening = new Promise((resolve, reject) => {
      proc.once("error", e => reject(new Error(`cannot start ${CONCORD_BIN}: ${e.message}`)));
      proc.once("exit", (code, signal) =>
        reject(new Error(`concord serve exited early (code ${code}, signal ${signal}):\n${logs.join("")}`)),
      );
      proc.stdout.on("data", chunk => {
        server.stdout += chunk;
        const m = LISTENING.exec(server.stdout);
        if (m) resolve(m);
      });
    });
    try {
      const m = await withTimeout(listening, "concord serve to print its listening line");
      server.httpUrl = m[1];
      server.wsUrl = m[2];
      server.token = await token(server);
      if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(server.token)) throw new Error(`unexpected token: ${server.token}`);
    } catch (e) {
      proc.kill("SIGKILL");
      throw e;
    }
    return server;
  }

  /** SIGTERM, then waits for the exit (SIGKILL after WAIT_MS). Returns the exit status. */
  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill("SIGTERM");
    try {
      return await withTimeout(this.exited, "concord serve to exit after SIGTERM");
    } catch (e) {
      this.proc.kill("SIGKILL");
      await withTimeout(this.exited, "concord serve to exit after SIGKILL", 5_000).catch(() => {});
      throw e;
    }
  }
}

/** Heads as a sorted array, for comparisons. */
export const sortedHeads = heads => [...(heads ?? [])].sort();

/** The storage id the server announced in its `peer` message to `repo` (the server is its only peer). */
export function serverStorageId(repo) {
  const metas = Object.values(repo.peerMetadataByPeerId);
  return metas.find(m => m?.storageId)?.storageId;
}

/**
 * Waits until the server has acknowledged everything `handle` holds: the heads the server reports
 * in its sync messages (tracked by automerge-repo per storage id) equal the handle's heads.
 */
export async function waitServerHas(repo, handle, label = "the server to acknowledge the document's heads") {
  await waitFor(() => {
    const sid = serverStorageId(repo);
    const theirs = sid && handle.getSyncInfo(sid)?.lastHeads;
    return theirs && JSON.stringify(sortedHeads(theirs)) === JSON.stringify(sortedHeads(handle.heads()));
  }, label);
}

/** `GET /admin/docs/{id}` of the server (with its admin token): `{status, body}`. */
export async function adminDoc(server, documentId) {
  const res = await withTimeout(
    fetch(`${server.httpUrl}/admin/docs/${documentId}`, { headers: { authorization: `Bearer ${server.token}` } }),
    "GET /admin/docs/{id}",
  );
  return { status: res.status, body: await res.json() };
}

/**
 * A fresh in-memory automerge-repo client connected to `url` over its own WebSocket.
 * `wrapSend(send)`, if given, returns the adapter's outgoing-message function (to observe or delay
 * messages).
 */
export function jsClient(url, wrapSend) {
  const adapter = new BrowserWebSocketClientAdapter(url);
  if (wrapSend) adapter.send = wrapSend(adapter.send.bind(adapter));
  return new Repo({ network: [adapter] });
}

/** Waits until `repo` has completed its handshake with the server. */
export const waitConnected = repo =>
  waitFor(() => Object.keys(repo.peerMetadataByPeerId).length > 0, "the JS client to complete its handshake");

/**
 * `repo.shutdown()`, bounded. A repo whose adapter has not started connecting yet (a test that
 * failed within a tick of creating it) throws synchronously from the adapter's `disconnect()`;
 * then retry shortly, once it has.
 */
async function shutdownRepo(repo) {
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await withTimeout(Promise.resolve().then(() => repo.shutdown()), "repo.shutdown()", 5_000);
      return;
    } catch (e) {
      lastError = e;
      await sleep(50);
    }
  }
  throw lastError;
}

/**
 * Resources of one test, released in reverse order by `cleanup()` (JS clients before servers, so
 * the clients' reconnect timers do not outlive the test). `cleanup()` is idempotent.
 */
export class Harness {
  constructor() {
    this.repos = [];
    this.proxies = [];
    this.servers = [];
    this.dirs = [];
    this.databases = [];
  }

  /** A throwaway PostgreSQL, stopped after the servers. */
  async postgres() {
    const pg = await TempPostgres.start();
    this.databases.push(pg);
    return pg;
  }

  /** A cluster node on the database `pg`. */
  async node(pg, nodeId) {
    const s = await Server.startNode(pg.url, nodeId);
    this.servers.push(s);
    return s;
  }

  async tempDir(prefix = "concord-js-") {
    const dir = await mkdtemp(path.join(tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  async server(dataDir) {
    const s = await Server.start(dataDir ?? (await this.tempDir()));
    this.servers.push(s);
    return s;
  }

  /** A JS client of `server`, authenticated with the server's token in the URL. */
  client(server, wrapSend) {
    const repo = jsClient(server.syncUrl, wrapSend);
    this.repos.push(repo);
    return repo;
  }

  /** A TCP proxy in front of `server` that can hold back what its clients send (proxy.mjs). */
  async proxy(server) {
    const { hostname, port } = new URL(server.wsUrl);
    const p = await HoldingProxy.start({ host: hostname, port: Number(port) });
    this.proxies.push(p);
    return p;
  }

  /** Shuts one client down (and forgets it). */
  async closeClient(repo) {
    this.repos = this.repos.filter(r => r !== repo);
    await shutdownRepo(repo);
  }

  /** Finds `url` in `repo`, bounded. */
  async find(repo, url) {
    return withTimeout(repo.find(url), `repo.find(${url})`);
  }

  /** The server logs, for assertion messages. */
  logs() {
    return this.servers.map((s, i) => `--- server ${i} (${s.wsUrl}) stderr ---\n${s.tail()}`).join("\n");
  }

  async cleanup() {
    const errors = [];
    for (const repo of this.repos.splice(0).reverse()) {
      await shutdownRepo(repo).catch(e => errors.push(e));
    }
    for (const p of this.proxies.splice(0)) {
      await p.close().catch(e => errors.push(e));
    }
    for (const s of this.servers.splice(0).reverse()) {
      await s.stop().catch(e => errors.push(e));
    }
    for (const pg of this.databases.splice(0)) {
      await pg.stop().catch(e => errors.push(e));
    }
    for (const d of this.dirs.splice(0)) {
      await rm(d, { recursive: true, force: true }).catch(() => {});
    }
    if (errors.length) throw errors[0];
  }
}

/**
 * Runs `body(harness)` for the test `t` and always cleans up: when the body settles, and also when
 * the test is aborted (timeout, cancellation) while the body still hangs. Cleanup errors surface
 * only when the body succeeded (a failing body's own error is the interesting one).
 */
export async function withHarness(t, body) {
  const h = new Harness();
  const onAbort = () => void h.cleanup().catch(() => {});
  t?.signal?.addEventListener("abort", onAbort, { once: true });
  let failed = false;
  try {
    return await body(h);
  } catch (e) {
    failed = true;
    if (h.servers.length && process.env.CONCORD_TEST_LOGS !== "0") {
      e.message += `\n${h.logs()}`;
    }
    throw e;
  } finally {
    t?.signal?.removeEventListener("abort", onAbort);
    try {
      await h.cleanup();
    } catch (e) {
      if (!failed) throw e;
    }
  }
}

/**
 * Runs `concord doc ARGS...` against `server` (with `--token`) with replica directory `dataDir`;
 * resolves to `{code, stdout, stderr}`.
 */
export function concordDoc(dataDir, server, args, ms = WAIT_MS) {
  const full = ["doc", "--data", dataDir, "--server", server.wsUrl, "--token", server.token, "--timeout", "10", ...args];
  return runConcord(full, { ms });
}

/** Like `concordDoc` but fails unless the command exits 0; returns stdout. */
export async function concordDocOk(dataDir, server, args, ms) {
  const r = await concordDoc(dataDir, server, args, ms);
  if (r.code !== 0) {
    throw new Error(`concord doc ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r.stdout;
}
