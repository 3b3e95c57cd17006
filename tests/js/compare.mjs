// Side-by-side probe of automerge-repo protocol behaviours: the reference sync server (stock
// automerge-repo 2.5.6 in Node, benches/reference/automerge-repo-server.mjs) and `concord serve`,
// each probe on a fresh server of each kind. Prints one line per behaviour with what each server
// did; tests/js/README.md lists the differences and whether they are intended.
//
//   (cd benches/reference && npm ci --ignore-scripts)   # the reference server's packages, once
//   (cd tests/js && npm ci --ignore-scripts)            # these packages (run.sh does it too)
//   cargo build -p concord-server
//   node tests/js/compare.mjs                           # about a minute; an argument filters probes
//
// The concord binary is found as by the tests ($CONCORD_BIN, else target/debug/concord).

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";
import { Repo, cbor, generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import * as A from "@automerge/automerge";

import { Server, withTimeout } from "./harness.mjs";
import { HoldingProxy } from "./proxy.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REFERENCE = path.resolve(HERE, "../../benches/reference");

const sleep = ms => new Promise(r => setTimeout(r, ms));
const emptySync = () => A.generateSyncMessage(A.init(), A.initSyncState())[1];
const newDocId = () => parseAutomergeUrl(generateAutomergeUrl()).documentId;

/** The reference server on a free port with a temporary directory. */
async function startReference() {
  const dir = await mkdtemp(path.join(tmpdir(), "reference-"));
  const proc = spawn("node", ["automerge-repo-server.mjs", "0", dir], { cwd: REFERENCE, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const url = await withTimeout(
    new Promise((resolve, reject) => {
      proc.stdout.on("data", c => {
        out += c;
        const m = /listening on (ws:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      proc.once("exit", code => reject(new Error(`reference server exited (${code})`)));
    }),
    "the reference server to listen",
  );
  // It prints its address when the socket listens, before its repo handles connections (a
  // connection accepted in between is ignored for good): wait until a join is answered.
  for (let i = 0; ; i++) {
    const c = await Raw.open(url);
    const answered = c.refused ? undefined : await c.join("ready-check", {}, 500);
    c.close?.();
    if (answered) break;
    if (i > 40) throw new Error("the reference server never answered a join");
  }
  return {
    syncUrl: url,
    bareUrl: url,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop() {
      proc.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** `concord serve` on a free port with a temporary directory, and a full-access token. */
async function startConcord() {
  const dir = await mkdtemp(path.join(tmpdir(), "concord-compare-"));
  const server = await Server.start(dir);
  return {
    syncUrl: server.syncUrl,
    bareUrl: server.wsUrl,
    wsUrl: server.wsUrl,
    token: server.token,
    alive: () => server.proc.exitCode === null && server.proc.signalCode === null,
    async stop() {
      await server.stop().catch(() => server.proc.kill("SIGKILL"));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A raw protocol client: CBOR frames in and out, every received message kept. */
class Raw {
  constructor(ws) {
    this.ws = ws;
    this.inbox = [];
    this.waiters = [];
    this.pings = [];
    this.opened = Date.now();
    this.closed = new Promise(resolve => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("ping", () => this.pings.push(Date.now() - this.opened));
    ws.on("message", data => {
      let m;
      try {
        m = cbor.decode(new Uint8Array(data));
      } catch {
        m = { type: "<undecodable>" };
      }
      m.at = Date.now();
      this.inbox.push(m);
      for (const w of [...this.waiters]) {
        if (w.pred(m)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
  }

  /** Opens `url`; resolves to a Raw, or to `{refused}` with the HTTP status or error. */
  static open(url) {
    return new Promise(resolve => {
      const ws = new WebSocket(url);
      ws.once("open", () => resolve(new Raw(ws)));
      ws.once("unexpected-response", (_, res) => resolve({ refused: `HTTP ${res.statusCode}` }));
      ws.once("error", e => resolve({ refused: e.message }));
    });
  }

  send(obj) {
    this.ws.send(cbor.encode(obj));
  }

  /** The first message (already received or coming within `ms`) matching `pred`, or undefined. */
  next(pred = () => true, ms = 2_000) {
    const seen = this.inbox.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise(resolve => {
      const w = { pred, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(undefined);
      }, ms);
    });
  }

  /** Joins as `senderId`; resolves to the server's first answer. */
  async join(senderId, extra = {}, ms = 2_000) {
    this.senderId = senderId;
    this.send({ type: "join", senderId, peerMetadata: { isEphemeral: true }, supportedProtocolVersions: ["1"], ...extra });
    this.server = await this.next(m => m.type === "peer" || m.type === "error", ms);
    return this.server;
  }

  /** The types of the messages about `documentId` received within `ms`, with the time of each. */
  async about(documentId, t0, ms) {
    await sleep(ms);
    const seen = this.inbox.filter(m => m.documentId === documentId);
    return seen.length ? seen.map(m => `${m.type} (${m.at - t0} ms)`).join(", ") : `nothing (${ms} ms)`;
  }

  /** Sends `request` (or `type`) for `documentId` with an empty sync message. */
  ask(documentId, type = "request") {
    this.send({ type, senderId: this.senderId, targetId: this.server?.senderId, documentId, data: emptySync() });
  }

  /** `closed (code)` if the server closes within `ms`, else `open`. */
  async state(ms = 1_000) {
    const c = await Promise.race([this.closed, sleep(ms).then(() => undefined)]);
    return c ? `closed ${c.code}${c.reason ? ` "${c.reason}"` : ""}` : "open";
  }

  close() {
    this.ws.terminate();
  }
}

/** A stock automerge-repo client (in memory). */
function jsRepo(url) {
  return new Repo({ network: [new BrowserWebSocketClientAdapter(url)] });
}

const waitPeer = async repo => {
  for (let i = 0; i < 200 && !Object.keys(repo.peerMetadataByPeerId).length; i++) await sleep(25);
};

/** Shuts a stock client down once connected (closing a socket still connecting throws later). */
async function shut(repo) {
  await waitPeer(repo);
  try {
    repo.shutdown();
  } catch {
    // already closed
  }
}

/** A document created by a stock client and stored by the server; returns its id. */
async function seeded(server) {
  const repo = jsRepo(server.syncUrl);
  await waitPeer(repo);
  const h = repo.create({ seeded: true });
  // The server acknowledges it by sending heads back; give it a moment and a round trip.
  for (let i = 0; i < 100; i++) {
    const sid = Object.values(repo.peerMetadataByPeerId).find(m => m?.storageId)?.storageId;
    if (sid && h.getSyncInfo(sid)?.lastHeads?.length) break;
    await sleep(25);
  }
  await shut(repo);
  return h.documentId;
}

const describe = m => {
  if (!m) return "nothing (2 s)";
  if (m.type === "error") return `error "${String(m.message).slice(0, 70)}"`;
  return m.type;
};

/** Each probe: (server) => a short description of what happened. */
const PROBES = [
  [
    "handshake answer to join v1",
    async s => {
      const c = await Raw.open(s.syncUrl);
      const m = await c.join("probe");
      c.close();
      const meta = m?.peerMetadata ? Object.keys(m.peerMetadata).sort().join(",") : "none";
      return `${describe(m)}, selectedProtocolVersion ${m?.selectedProtocolVersion}, peerMetadata keys ${meta}`;
    },
  ],
  [
    "join offering only version 2",
    async s => {
      const c = await Raw.open(s.syncUrl);
      c.send({ type: "join", senderId: "probe", peerMetadata: {}, supportedProtocolVersions: ["2"] });
      const m = await c.next();
      return `${describe(m)}; ${await c.state()}`;
    },
  ],
  [
    "join with the legacy `metadata` key",
    async s => {
      const c = await Raw.open(s.syncUrl);
      c.send({ type: "join", senderId: "probe", metadata: { isEphemeral: true }, supportedProtocolVersions: ["1"] });
      const m = await c.next();
      c.close();
      return describe(m);
    },
  ],
  [
    "request before join",
    async s => {
      const c = await Raw.open(s.syncUrl);
      c.send({ type: "request", senderId: "probe", targetId: "x", documentId: newDocId(), data: emptySync() });
      const m = await c.next();
      return `${describe(m)}; ${await c.state()}`;
    },
  ],
  [
    "connect without credentials",
    async s => {
      const c = await Raw.open(s.bareUrl);
      if (c.refused) return `refused (${c.refused})`;
      const m = await c.join("probe");
      c.close();
      return `accepted, ${describe(m)}`;
    },
  ],
  [
    "request for an unknown document, no other peer",
    async s => {
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      const id = newDocId();
      const t0 = Date.now();
      c.ask(id);
      const seen = await c.about(id, t0, 7_000);
      c.close();
      return seen;
    },
  ],
  [
    "request for an unknown document, a stock client that lacks it is connected",
    async s => {
      const bystander = jsRepo(s.syncUrl);
      const heard = [];
      bystander.networkSubsystem.adapters[0].on("message", m => m.documentId && heard.push(m.type));
      await waitPeer(bystander);
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      const id = newDocId();
      const t0 = Date.now();
      c.ask(id);
      const seen = await c.about(id, t0, 7_000);
      c.close();
      await shut(bystander);
      return `${seen}; the bystander got: ${heard.join(", ") || "nothing"}`;
    },
  ],
  [
    "strict find while the creator's first sync is held back (the race of tests/js/race.test.mjs)",
    async s => {
      const { hostname, port } = new URL(s.syncUrl);
      const proxy = await HoldingProxy.start({ host: hostname, port: Number(port) });
      const creator = jsRepo(proxy.syncUrl(s));
      const finder = jsRepo(s.syncUrl);
      await waitPeer(creator);
      await waitPeer(finder);
      proxy.hold();
      const h = creator.create({ n: 1 });
      // What the server sends the creator while the creator's frames are held is a question.
      const asked = proxy.waitServerSent(m => m.documentId === h.documentId, "ask", 3_000).then(
        m => `asked the creator (${m.type}) first`,
        () => "did not ask the creator",
      );
      const found = withTimeout(finder.find(h.url), "find", 10_000).then(
        () => "found",
        e => `find rejected (${e.message.replace(/automerge:\S+/, "URL")})`,
      );
      const first = await Promise.race([asked, found]);
      const askedFirst = first.startsWith("asked");
      proxy.release();
      const result = `${await found}; ${askedFirst ? first : "did not ask the creator before answering"}`;
      await shut(creator);
      await shut(finder);
      await proxy.close();
      return result;
    },
  ],
  [
    "a document that arrives after doc-unavailable",
    async s => {
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      // The creator is offline: its repo has no network until the requester was answered.
      const creator = new Repo({ network: [] });
      const h = creator.create({ late: true });
      const t0 = Date.now();
      c.ask(h.documentId);
      const first = await c.about(h.documentId, t0, 1_000);
      c.inbox = [];
      creator.networkSubsystem.addNetworkAdapter(new BrowserWebSocketClientAdapter(s.syncUrl));
      const later = await c.next(x => x.documentId === h.documentId && x.type === "sync", 5_000);
      c.close();
      await shut(creator);
      const has = later && A.decodeSyncMessage(later.data).heads.length > 0;
      return `${first}; once the creator connects: ${has ? "sync with its heads" : "nothing (5 s)"}`;
    },
  ],
  [
    "sync with zero-length data",
    async s => {
      const c = await Raw.open(s.syncUrl);
      const p = await c.join("probe");
      c.send({ type: "sync", senderId: "probe", targetId: p?.senderId, documentId: newDocId(), data: new Uint8Array(0) });
      const m = await c.next(x => x.type !== "peer");
      return `${describe(m)}; ${await c.state()}; server ${s.alive() ? "up" : "DOWN"}`;
    },
  ],
  [
    "an undecodable frame after the handshake",
    async s => {
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      c.ws.send(Buffer.from([0xff, 0x00, 0x13]));
      const m = await c.next(x => x.type !== "peer");
      return `${describe(m)}; ${await c.state()}; server ${s.alive() ? "up" : "DOWN"}`;
    },
  ],
  [
    "a 2 MiB frame",
    async s => {
      const c = await Raw.open(s.syncUrl);
      const p = await c.join("probe");
      const big = new Uint8Array(2 << 20).fill(7);
      c.send({ type: "sync", senderId: "probe", targetId: p?.senderId, documentId: newDocId(), data: big });
      const m = await c.next(x => x.type !== "peer");
      return `${describe(m)}; ${await c.state()}`;
    },
  ],
  [
    "documentId sent as 16 bytes",
    async s => {
      const id = await seeded(s);
      const c = await Raw.open(s.syncUrl);
      const p = await c.join("probe");
      const bytes = parseAutomergeUrl(`automerge:${id}`).binaryDocumentId;
      c.send({ type: "request", senderId: "probe", targetId: p?.senderId, documentId: bytes, data: emptySync() });
      const m = await c.next(x => x.type !== "peer");
      return `${describe(m)}; ${await c.state()}; server ${s.alive() ? "up" : "DOWN"}`;
    },
  ],
  [
    "ephemeral message: the other peer / the sender / a repeated count",
    async s => {
      const id = await seeded(s);
      const [a, b] = [await Raw.open(s.syncUrl), await Raw.open(s.syncUrl)];
      for (const [c, name] of [[a, "eph-a"], [b, "eph-b"]]) {
        await c.join(name);
        c.ask(id);
        await c.next(x => x.type === "sync" && x.documentId === id);
      }
      const eph = { type: "ephemeral", senderId: "eph-a", targetId: a.server.senderId, documentId: id, sessionId: "s1", count: 1, data: cbor.encode({ hi: 1 }) };
      a.send(eph);
      const got = await b.next(x => x.type === "ephemeral");
      const back = await a.next(x => x.type === "ephemeral", 500);
      a.send(eph); // the same count again
      await sleep(500);
      const copies = b.inbox.filter(x => x.type === "ephemeral").length;
      a.close();
      b.close();
      return `other peer ${got ? "gets it" : "does not"}, sender ${back ? "gets it back" : "does not"}, repeat ${copies > 1 ? "forwarded again" : "dropped"}`;
    },
  ],
  [
    "remote-subscription-change to the server's storage id",
    async s => {
      const id = await seeded(s);
      const c = await Raw.open(s.syncUrl);
      const p = await c.join("probe");
      const sid = p?.peerMetadata?.storageId;
      c.send({ type: "remote-subscription-change", senderId: "probe", targetId: p?.senderId, add: [sid] });
      c.ask(id);
      const m = await c.next(x => x.type === "remote-heads-changed", 2_000);
      c.close();
      return m ? "remote-heads-changed for the document" : "no remote-heads-changed (2 s)";
    },
  ],
  [
    "a second connection joining with the same peer id",
    async s => {
      const [a, b] = [await Raw.open(s.syncUrl), await Raw.open(s.syncUrl)];
      await a.join("twin");
      const m = await b.join("twin");
      return `second: ${describe(m)}; first: ${await a.state()}; second: ${await b.state(300)}`;
    },
  ],
  [
    "leave",
    async s => {
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      c.send({ type: "leave", senderId: "probe" });
      return await c.state();
    },
  ],
  [
    "keepalive ping from the server",
    async s => {
      const c = await Raw.open(s.syncUrl);
      await c.join("probe");
      await sleep(6_500);
      c.close();
      return c.pings.length ? `first after ${(c.pings[0] / 1000).toFixed(1)} s` : "none within 6.5 s";
    },
  ],
];

async function main() {
  if (!existsSync(path.join(REFERENCE, "node_modules"))) {
    console.error(`compare.mjs: run \`npm ci --ignore-scripts\` in ${REFERENCE} first`);
    process.exit(1);
  }
  const only = process.argv[2] ? new RegExp(process.argv[2]) : undefined;
  for (const [name, probe] of PROBES) {
    if (only && !only.test(name)) continue;
    const row = [];
    for (const start of [startReference, startConcord]) {
      const server = await start();
      try {
        row.push(await withTimeout(probe(server), name, 30_000));
      } catch (e) {
        row.push(`probe failed: ${e.message}`);
      } finally {
        await server.stop();
      }
    }
    console.log(`${name}\n  reference: ${row[0]}\n  concord:   ${row[1]}`);
  }
  process.exit(0);
}

await main();
