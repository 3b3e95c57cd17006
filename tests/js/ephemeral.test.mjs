// Scenario (d): ephemeral messages (presence, cursors) sent with `handle.broadcast` are forwarded by
// the server to the other JS clients of the same document, and never stored.

import { test } from "node:test";
import assert from "node:assert/strict";

import { TEST_TIMEOUT_MS, adminDoc, sleep, sortedHeads, waitFor, waitServerHas, withHarness } from "./harness.mjs";

/** Collects the ephemeral messages a handle receives. */
function inbox(handle) {
  const got = [];
  handle.on("ephemeral-message", ({ senderId, message }) => got.push({ senderId, message }));
  return got;
}

test("d: an ephemeral message from one JS client reaches the other clients of that document only", { timeout: TEST_TIMEOUT_MS }, () =>
  withHarness(async h => {
    const server = await h.server();
    const alice = h.client(server);
    const bob = h.client(server);
    const carol = h.client(server); // subscribed to a different document

    const ha = alice.create({ title: "presence" });
    await waitServerHas(alice, ha);
    const hb = await h.find(bob, ha.url);
    const other = carol.create({ title: "unrelated" });
    await waitServerHas(carol, other);
    const headsBefore = sortedHeads(ha.heads());

    const toBob = inbox(hb);
    const toAlice = inbox(ha);
    const toCarol = inbox(other);

    // alice -> bob, several in order (each broadcast has a higher count).
    const cursors = [
      { user: "alice", cursor: { line: 1, col: 4 } },
      { user: "alice", cursor: { line: 2, col: 0 }, selection: [1, 2, 3] },
      { user: "alice", typing: true, note: "ünïcødé ✓" },
    ];
    for (const c of cursors) ha.broadcast(c);
    await waitFor(() => toBob.length >= cursors.length, "bob to receive alice's ephemeral messages");
    assert.deepEqual(
      toBob.map(m => m.message),
      cursors,
      "bob receives alice's messages intact and in order",
    );
    for (const m of toBob) assert.equal(m.senderId, alice.peerId, "senderId is alice's peer id");

    // bob -> alice.
    hb.broadcast({ user: "bob", cursor: { line: 9, col: 9 } });
    await waitFor(() => toAlice.length >= 1, "alice to receive bob's ephemeral message");
    assert.deepEqual(toAlice[0].message, { user: "bob", cursor: { line: 9, col: 9 } });
    assert.equal(toAlice[0].senderId, bob.peerId);

    // Give any stray forwarding a moment to show up, then check nothing leaked or echoed.
    await sleep(200);
    assert.equal(toCarol.length, 0, "a client of another document receives nothing");
    assert.equal(toAlice.length, 1, "alice gets no echo of her own messages");
    assert.equal(toBob.length, cursors.length, "bob gets no echo of his own message and no duplicates");

    // Ephemeral means not stored: the document did not change anywhere.
    assert.deepEqual(sortedHeads(ha.heads()), headsBefore);
    assert.deepEqual(sortedHeads(hb.heads()), headsBefore);
    const stored = await adminDoc(server, ha.documentId);
    assert.deepEqual(stored.body.value, { title: "presence" });
  }),
);
