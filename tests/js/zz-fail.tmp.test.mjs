import { test } from "node:test";
import assert from "node:assert/strict";
import { withHarness } from "./harness.mjs";
test("fails", { timeout: 30000 }, () => withHarness(async h => {
  const s = await h.server(); const a = h.client(s); a.create({x:1});
  console.log("PID", s.proc.pid, s.dataDir);
  assert.equal(1, 2);
}));
test("hangs", { timeout: 3000 }, () => withHarness(async h => {
  const s = await h.server(); const a = h.client(s);
  console.log("PID", s.proc.pid, s.dataDir);
  await new Promise(() => {});
}));
