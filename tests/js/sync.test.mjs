// Scenarios (a) and (b): stock automerge-repo clients create, find, edit and concurrently edit
// documents through a real `concord serve`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";

import { Counter } from "@automerge/automerge-repo";
import { decodeSyncMessage } from "@automerge/automerge";

import {
  TEST_TIMEOUT_MS,
  adminDoc,
  plain,
  sleep,
  sortedHeads,
  waitConnected,
  waitFor,
  waitServerHas,
  withHarness,
  withTimeout,
} from "./harness.mjs";

test("a: a document created by one JS client is found by a fresh JS client, and edits flow both ways", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const alice = h.client(server);

    const ha = alice.create({ title: "created by alice", tags: ["x"], nested: { n: 1 } });
    ha.change(d => {
      d.tags.push("y");
      d.nested.n = 2;
    });
    // The server acknowledges alice's heads in its sync messages and has stored the value.
    await waitServerHas(alice, ha);
    const stored = await adminDoc(server, ha.documentId);
    assert.equal(stored.status, 200, JSON.stringify(stored.body));
    assert.deepEqual(stored.body.value, plain(ha.doc()));

    // A second repo with its own connection finds it by URL.
    const bob = h.client(server);
    const hb = await h.find(bob, ha.url);
    assert.deepEqual(plain(hb.doc()), { title: "created by alice", tags: ["x", "y"], nested: { n: 2 } });
    assert.deepEqual(sortedHeads(hb.heads()), sortedHeads(ha.heads()));

    // Reverse direction: bob edits, alice (still connected) sees it.
    hb.change(d => {
      d.title = "edited by bob";
      d.tags.push("z");
      d.fromBob = true;
    });
    await waitFor(() => ha.doc().fromBob === true, "alice to receive bob's edit");
    await waitFor(() => isDeepStrictEqual(plain(ha.doc()), plain(hb.doc())), "alice and bob to converge");
    assert.deepEqual(plain(ha.doc()), {
      title: "edited by bob",
      tags: ["x", "y", "z"],
      nested: { n: 2 },
      fromBob: true,
    });

    // A document created by the second client is found by the first over its existing connection.
    const hb2 = bob.create({ owner: "bob", items: [1, 2, 3] });
    await waitServerHas(bob, hb2);
    const ha2 = await h.find(alice, hb2.url);
    assert.deepEqual(plain(ha2.doc()), { owner: "bob", items: [1, 2, 3] });
    ha2.change(d => d.items.splice(1, 1));
    await waitFor(() => bob.handles[hb2.documentId].doc().items.length === 2, "bob to see alice's delete");
    assert.deepEqual(plain(hb2.doc()), { owner: "bob", items: [1, 3] });

    // Everything went through the server: a third, fresh client gets the latest state of both.
    await waitServerHas(bob, hb);
    await waitServerHas(alice, ha2);
    const carol = h.client(server);
    const hc = await h.find(carol, ha.url);
    const hc2 = await h.find(carol, hb2.url);
    assert.deepEqual(plain(hc.doc()), plain(ha.doc()));
    assert.deepEqual(plain(hc2.doc()), plain(hb2.doc()));
  }),
);

test("a: a document requested before its creator synced it is delivered once it arrives", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const alice = h.client(server);
    const bob = h.client(server);
    // Both connect at once; bob asks for alice's new document right away (a shared link opened
    // immediately). The server may answer doc-unavailable first; it must still forward the
    // document once alice's first sync reaches it.
    const ha = alice.create({ title: "fresh", n: 1 });
    const hb = await withTimeout(
      bob.find(ha.url, { allowableStates: ["ready", "unavailable"] }),
      "bob's find to settle (ready or unavailable)",
    );
    await withTimeout(hb.whenReady(["ready"]), "bob's handle to become ready once the document arrives");
    await waitFor(() => isDeepStrictEqual(plain(hb.doc()), { title: "fresh", n: 1 }), "bob to see alice's value");
  }),
);

// Regression test (fixed in client-core/src/core/availability.rs). A peer that has
// offered a document (sent sync with non-empty heads) is still being synced from, so a request for
// that document must wait for it, not be answered doc-unavailable. automerge-repo's DocSynchronizer
// marks such a peer "has" and only sends doc-unavailable when every peer is "unavailable" or "wants";
// Concord's `check_availability` (client-core/src/core/availability.rs) only counts peers *it* requested
// from (`we_requested`), so with ServerPolicy (never requests from inbound clients) it answers
// doc-unavailable at once, and a stock JS `repo.find(url)` rejects ("Document ... is unavailable").
// Deterministic here: alice's sync messages that carry changes are held back for 1 s, so bob's
// request reaches the server after alice's offer (heads only) and before her changes.
test("a: a request arriving while the creator's first sync is in flight waits for it (strict find)", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    let target;
    let offered;
    const offer = new Promise(resolve => (offered = resolve));
    const alice = h.client(server, send => msg => {
      if (msg.type === "sync" && msg.documentId === target) {
        if (decodeSyncMessage(msg.data).changes.length > 0) {
          setTimeout(() => {
            try {
              send(msg);
            } catch {
              // the test is over and the socket closed
            }
          }, 1000);
          return;
        }
        offered();
      }
      send(msg);
    });
    const bob = h.client(server);
    await waitConnected(alice);
    await waitConnected(bob);
    const ha = alice.create({ title: "shared link opened at once" });
    target = ha.documentId;
    await withTimeout(offer, "alice to offer the document (sync with heads, no changes)");
    await sleep(200); // the server has processed the offer
    const hb = await h.find(bob, ha.url); // plain find: rejects if the server says doc-unavailable
    assert.deepEqual(plain(hb.doc()), { title: "shared link opened at once" });
  }),
);

test("b: two JS clients editing concurrently converge to identical values", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const alice = h.client(server);
    const bob = h.client(server);

    const ha = alice.create({ shared: [], counter: new Counter(0), text: "hello" });
    await waitServerHas(alice, ha);
    const hb = await h.find(bob, ha.url);

    // Concurrent edits: each side changes without waiting for the other's changes to arrive.
    const ROUNDS = 20;
    for (let i = 0; i < ROUNDS; i++) {
      ha.change(d => {
        d[`alice${i}`] = i;
        d.shared.push(`a${i}`);
        d.counter.increment(1);
      });
      hb.change(d => {
        d[`bob${i}`] = i;
        d.shared.push(`b${i}`);
        d.counter.increment(10);
      });
      if (i % 5 === 4) await sleep(5); // let some frames interleave mid-stream
    }
    // The same key written concurrently by both: automerge picks one winner, the same on both.
    ha.change(d => (d.winner = "alice"));
    hb.change(d => (d.winner = "bob"));

    await waitFor(
      () =>
        isDeepStrictEqual(plain(ha.doc()), plain(hb.doc())) &&
        isDeepStrictEqual(sortedHeads(ha.heads()), sortedHeads(hb.heads())),
      "alice and bob to converge (same value and heads)",
    );
    const doc = plain(ha.doc());
    assert.equal(doc.counter, ROUNDS * 11, "every increment counted once");
    assert.equal(doc.shared.length, 2 * ROUNDS, "every push kept");
    for (let i = 0; i < ROUNDS; i++) {
      assert.equal(doc[`alice${i}`], i);
      assert.equal(doc[`bob${i}`], i);
      assert.ok(doc.shared.includes(`a${i}`) && doc.shared.includes(`b${i}`), `a${i}/b${i} present`);
    }
    // Each client's own pushes keep their relative order.
    const order = who => doc.shared.filter(x => x.startsWith(who));
    assert.deepEqual(order("a"), Array.from({ length: ROUNDS }, (_, i) => `a${i}`));
    assert.deepEqual(order("b"), Array.from({ length: ROUNDS }, (_, i) => `b${i}`));
    assert.ok(["alice", "bob"].includes(doc.winner));
    assert.equal(doc.text, "hello");

    // The server converged too.
    await waitServerHas(alice, ha);
    await waitServerHas(bob, hb);
    const stored = await adminDoc(server, ha.documentId);
    assert.deepEqual(stored.body.value, doc);
  }),
);
