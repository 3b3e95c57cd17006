// Tokens with stock JS clients: a browser-style client passes its token in the URL (`?token=`); the
// server enforces the token's grant on every message.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  TEST_TIMEOUT_MS,
  adminDoc,
  plain,
  runConcordOk,
  sleep,
  waitServerHas,
  withHarness,
  withTimeout,
} from "./harness.mjs";

test("f: a read-only token for one document: JS reads it, cannot see others, and its edits are refused", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const alice = h.client(server); // full access
    const granted = alice.create({ title: "shared read-only" });
    const secret = alice.create({ title: "not for bob" });
    await waitServerHas(alice, granted);
    await waitServerHas(alice, secret);

    const token = (
      await runConcordOk(["token", "create", "--data", server.dataDir, "--principal", "bob", "--doc", granted.url, "--read-only", "--ttl", "10m"])
    ).trim();
    const bob = h.client({ syncUrl: `${server.wsUrl}?token=${encodeURIComponent(token)}` });

    // Reads the granted document.
    const hb = await h.find(bob, granted.url);
    assert.deepEqual(plain(hb.doc()), { title: "shared read-only" });

    // The other document is unavailable to him (indistinguishable from a missing one).
    const other = await withTimeout(
      bob.find(secret.url, { allowableStates: ["ready", "unavailable"] }),
      "bob's find of a document outside his grant to settle",
    );
    assert.equal(other.state, "unavailable");
    assert.equal(other.isReady(), false);

    // His local edit is refused by the server: not stored, not forwarded to alice.
    hb.change(d => (d.title = "vandalised"));
    granted.change(d => (d.after = "alice still writes"));
    await waitServerHas(alice, granted);
    await sleep(300);
    const stored = await adminDoc(server, granted.documentId);
    assert.deepEqual(stored.body.value, { title: "shared read-only", after: "alice still writes" });
    assert.deepEqual(plain(granted.doc()), { title: "shared read-only", after: "alice still writes" });
  }),
);
