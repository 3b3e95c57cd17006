// Deletion seen by stock clients: a document the Rust CLI deletes (`concord doc rm`) is
// `doc-unavailable` to a stock automerge-repo client that looks for it afterwards (stock clients do
// not speak Concord's `concord-deleted` extension), and its edits cannot bring it back.

import { test } from "node:test";
import assert from "node:assert/strict";

import { TEST_TIMEOUT_MS, concordDocOk, waitServerHas, withHarness, withTimeout } from "./harness.mjs";

test("i: a deleted document is unavailable to stock clients, and stays deleted", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const replica = await h.tempDir("concord-js-replica-");
    const alice = h.client(server);
    const ha = alice.create({ title: "to be deleted" });
    await waitServerHas(alice, ha);

    const out = await concordDocOk(replica, server, ["rm", ha.url]);
    assert.match(out, /^deleted automerge:/m, out);

    // A fresh stock client cannot find it.
    const bob = h.client(server);
    await assert.rejects(
      withTimeout(bob.find(ha.url), "bob's find to settle"),
      /unavailable/i,
      "a stock client's find rejects as unavailable",
    );

    // Alice (who still holds it) edits it: the server refuses, nothing comes back.
    ha.change(d => {
      d.title = "resurrected?";
    });
    const carol = h.client(server);
    await assert.rejects(withTimeout(carol.find(ha.url), "carol's find to settle"), /unavailable/i);
  }));
