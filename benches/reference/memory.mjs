// Benchmark 6 load: one stock automerge-repo client creates DOCS documents (a 200-character
// text and 20 map keys each) on the server, waits until the server holds them, then closes.
// Prints the server's RSS (from /proc) before, with every document active (client connected),
// and IDLE_S seconds after the client left (idle documents), as one JSON line.
// Usage: node memory.mjs URL DOCS SERVER_PID IDLE_S
import { readFileSync } from "node:fs";
import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

const [url, docsS, pid, idleS] = process.argv.slice(2);
const DOCS = Number(docsS);
const sleep = ms => new Promise(r => setTimeout(r, ms));
const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
const serverCpu = () => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
  return Number(f[11]) + Number(f[12]);
};
/** Waits until the server's CPU is quiet for a second (it has ingested what it was sent). */
async function quiet() {
  let last = serverCpu();
  for (let i = 0; i < 120; i++) {
    await sleep(1000);
    const now = serverCpu();
    if (now - last <= 1) return;
    last = now;
  }
}

const base = rssKb();
const repo = new Repo({ network: [new BrowserWebSocketClientAdapter(url)], sharePolicy: async () => true });
for (let i = 0; i < DOCS; i++) {
  const fields = {};
  for (let k = 0; k < 20; k++) fields[`key${k}`] = `value ${i} ${k}`;
  repo.create({ text: "x".repeat(200), ...fields });
  if (i % 100 === 99) await sleep(50);
}
await quiet();
const active = rssKb();
await repo.shutdown();
await sleep(Number(idleS) * 1000);
await quiet();
const idle = rssKb();
console.log(JSON.stringify({ docs: DOCS, base_kb: base, active_kb: active, idle_kb: idle }));
process.exit(0);
