import { Harness } from "./harness.mjs";
const t0 = Date.now();
const log = (...a) => process.stderr.write(`${Date.now() - t0}ms ${a.join(" ")}\n`);
process.on("uncaughtException", e => log("UNCAUGHT", e.stack));
const h = new Harness();
const s = await h.server(); const a = h.client(s); a.create({x:1});
log("PID", s.proc.pid);
s.exited.then(x => log("EXITED", JSON.stringify(x)));
try { await h.cleanup(); log("cleanup ok"); } catch (e) { log("cleanup err", e.stack); }
log("end");
