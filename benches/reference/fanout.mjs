// Fan-out load generator: N documents, one writer and M readers per document, each its own
// WebSocket connection; every writer changes its document R times a second for S seconds.
// mode "repo": stock automerge-repo 2.5.6 clients (the writer sets `n = seq`; readers see the
// change through the server). mode "broadcast": raw frames carrying `seq` through the floor.
// Prints one JSON line: delivered changes, latency p50/p99 (ms, writer's change to a reader
// seeing it), and this process's CPU time.
// The server's CPU time over the measured phase is read from /proc/SERVER_PID/stat.
// Usage: node fanout.mjs MODE URL DOCS READERS RATE SECS SERVER_PID
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

const [mode, url, docsS, readersS, rateS, secsS, serverPid] = process.argv.slice(2);
/** The server's user + system CPU seconds (10 ms ticks). */
const serverCpu = () => {
  const f = readFileSync(`/proc/${serverPid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};
const [DOCS, READERS, RATE, SECS] = [Number(docsS), Number(readersS), Number(rateS), Number(secsS)];
const sleep = ms => new Promise(r => setTimeout(r, ms));
const latencies = [];
const sent = []; // per doc: seq -> send time
let measuring = false;

function seen(doc, state, n) {
  const now = performance.now();
  for (let s = state.last + 1; s <= n; s++) {
    const t = sent[doc].get(s);
    if (measuring && t !== undefined) latencies.push(now - t);
  }
  state.last = Math.max(state.last, n);
}

const writers = [];
const closers = [];
async function setupRepo() {
  const repo = () => {
    const r = new Repo({ network: [new BrowserWebSocketClientAdapter(url)], sharePolicy: async () => true });
    closers.push(() => r.shutdown());
    return r;
  };
  for (let d = 0; d < DOCS; d++) {
    sent.push(new Map());
    const w = repo();
    const handle = w.create({ n: 0 });
    writers.push(seq => handle.change(doc => { doc.n = seq; }));
    for (let i = 0; i < READERS; i++) {
      const r = repo();
      let h;
      for (let attempt = 0; attempt < 100 && !h; attempt++) {
        try { h = await r.find(handle.url); } catch { await sleep(100); }
      }
      if (!h) throw new Error(`reader could not find ${handle.url}`);
      const state = { last: 0 };
      h.on("change", ({ doc }) => seen(d, state, doc.n ?? 0));
    }
  }
}

async function setupBroadcast() {
  const open = path => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/${path}`);
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
    closers.push(() => ws.close());
  });
  for (let d = 0; d < DOCS; d++) {
    sent.push(new Map());
    const w = await open(`doc-${d}`);
    writers.push(seq => { const b = Buffer.alloc(64); b.writeUInt32LE(seq, 0); w.send(b); });
    for (let i = 0; i < READERS; i++) {
      const r = await open(`doc-${d}`);
      const state = { last: 0 };
      r.on("message", data => seen(d, state, data.readUInt32LE(0)));
    }
  }
}

await (mode === "broadcast" ? setupBroadcast() : setupRepo());
await sleep(500);
const cpu0 = process.cpuUsage();
const server0 = serverCpu();
measuring = true;
const t0 = performance.now();
const interval = 1000 / RATE;
let seq = 0;
while (performance.now() - t0 < SECS * 1000) {
  seq += 1;
  const due = t0 + seq * interval;
  const wait = due - performance.now();
  if (wait > 0) await sleep(wait);
  for (let d = 0; d < DOCS; d++) {
    sent[d].set(seq, performance.now());
    writers[d](seq);
  }
}
await sleep(2000); // let the last changes arrive
measuring = false;
const cpu = process.cpuUsage(cpu0);
const server_cpu_s = serverCpu() - server0;
const wall = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const q = p => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.round((latencies.length - 1) * p))] : NaN);
console.log(JSON.stringify({
  mode, docs: DOCS, readers: READERS, rate: RATE, secs: SECS,
  written: seq * DOCS, expected: seq * DOCS * READERS, delivered: latencies.length,
  p50_ms: q(0.5), p99_ms: q(0.99), server_cpu_s, client_cpu_s: (cpu.user + cpu.system) / 1e6, wall_s: wall,
}));
for (const c of closers) { try { c(); } catch {} }
process.exit(0);
