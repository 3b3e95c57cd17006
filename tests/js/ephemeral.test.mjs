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

/** Three clients: alice and bob on one document, carol on another. */
async function setup(h) {
  const server = await h.server();
  const alice = h.client(server);
  const bob = h.client(server);
  const carol = h.client(server);
  const ha = alice.create({ title: "presence" });
  await waitServerHas(alice, ha);
  const hb = await h.find(bob, ha.url);
  const other = carol.create({ title: "unrelated" });
  await waitServerHas(carol, other);
  return { server, alice, bob, carol, ha, hb, other };
}

const fromPeer = (got, repo) => got.filter(m => m.senderId === repo.peerId);

test("d: an ephemeral message from one JS client reaches the other clients of that document only", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const { server, alice, bob, ha, hb, other } = await setup(h);
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
    await waitFor(() => fromPeer(toBob, alice).length >= cursors.length, "bob to receive alice's ephemeral messages");
    assert.deepEqual(
      fromPeer(toBob, alice).map(m => m.message),
      cursors,
      "bob receives alice's messages intact and in order",
    );

    // bob -> alice.
    hb.broadcast({ user: "bob", cursor: { line: 9, col: 9 } });
    await waitFor(() => fromPeer(toAlice, bob).length >= 1, "alice to receive bob's ephemeral message");
    assert.deepEqual(fromPeer(toAlice, bob).map(m => m.message), [{ user: "bob", cursor: { line: 9, col: 9 } }]);

    // Give any stray forwarding a moment to show up, then check nothing leaked or was duplicated.
    await sleep(200);
    assert.equal(toCarol.length, 0, "a client of another document receives nothing");
    assert.equal(fromPeer(toBob, alice).length, cursors.length, "no duplicates of alice's messages at bob");
    assert.equal(fromPeer(toAlice, bob).length, 1, "no duplicates of bob's message at alice");

    // Ephemeral means not stored: the document did not change anywhere.
    assert.deepEqual(sortedHeads(ha.heads()), headsBefore);
    assert.deepEqual(sortedHeads(hb.heads()), headsBefore);
    const stored = await adminDoc(server, ha.documentId);
    assert.deepEqual(stored.body.value, { title: "presence" });
  }),
);

// Regression test (fixed: ephemeral dedup is per replica, client-core/src/core/connection.rs): the server
// de-duplicates ephemeral messages per connection (client-core/src/core/connection.rs,
// `Conn::ephemeral_seen`) instead of per repo as automerge-repo does (NetworkSubsystem
// `#ephemeralSessionCounts`). JS clients relay every ephemeral message they receive to their other
// peers, i.e. back to the server; the relayed copy arrives on another connection, passes the
// per-connection check and is forwarded back to the original sender, which then sees its own
// message as an `ephemeral-message` event (and every client's relay is fanned out again).
test("d: the sender of an ephemeral message does not get it back", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const { alice, bob, ha, hb } = await setup(h);
    const toAlice = inbox(ha);
    const toBob = inbox(hb);
    ha.broadcast({ user: "alice", cursor: 1 });
    await waitFor(() => fromPeer(toBob, alice).length >= 1, "bob to receive alice's message");
    await sleep(300);
    assert.deepEqual(fromPeer(toAlice, alice), [], "alice received her own ephemeral message back");
    assert.equal(toBob.length, 1);
    assert.equal(toAlice.length, 0);
  }),
);
