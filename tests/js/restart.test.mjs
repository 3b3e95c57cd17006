// Scenario (c): documents written by JS clients survive a graceful server restart on the same
// data directory and are served to a fresh JS client afterwards.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Counter } from "@automerge/automerge-repo";

import { TEST_TIMEOUT_MS, plain, sortedHeads, waitFor, waitServerHas, withHarness } from "./harness.mjs";

test("c: every document written before a SIGTERM restart is served to a fresh JS client after it", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const data = await h.tempDir("concord-js-restart-");
    const first = await h.server(data);
    const alice = h.client(first);
    const bob = h.client(first);

    // Several documents, of several shapes, from two clients; some edited after creation.
    const handles = [
      alice.create({ kind: "map", title: "groceries", nested: { a: { b: [1, 2, { c: true }] } } }),
      alice.create({ kind: "list", items: [] }),
      bob.create({ kind: "counter", hits: new Counter(5) }),
      bob.create({ kind: "text", body: "hello world", unicode: "héllo ✓ 😀" }),
    ];
    handles[1].change(d => {
      for (let i = 0; i < 50; i++) d.items.push({ i, label: `item ${i}` });
    });
    handles[2].change(d => d.hits.increment(37));
    for (let i = 0; i < 10; i++) handles[3].change(d => (d.body += ` ${i}`));
    // Bob edits one of alice's documents too (so it has changes from two actors).
    await waitServerHas(alice, handles[0]);
    const shared = await h.find(bob, handles[0].url);
    shared.change(d => (d.editedBy = "bob"));
    await waitFor(() => handles[0].doc().editedBy === "bob", "alice to receive bob's edit");

    const repoOf = handle => (alice.handles[handle.documentId] === handle ? alice : bob);
    for (const handle of handles) await waitServerHas(repoOf(handle), handle);
    await waitServerHas(bob, shared);

    const expected = new Map(handles.map(hd => [hd.url, { value: plain(hd.doc()), heads: sortedHeads(hd.heads()) }]));
    assert.equal(expected.get(handles[0].url).value.editedBy, "bob");

    // Clients go away; SIGTERM; the server exits cleanly.
    await h.closeClient(alice);
    await h.closeClient(bob);
    const exit = await first.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `graceful exit after SIGTERM\n${first.tail()}`);

    // Same data directory, new process (new port); a brand-new client finds everything.
    const second = await h.server(data);
    const carol = h.client(second);
    for (const [url, want] of expected) {
      const hc = await h.find(carol, url);
      assert.deepEqual(plain(hc.doc()), want.value, `value of ${url} after restart`);
      assert.deepEqual(sortedHeads(hc.heads()), want.heads, `heads of ${url} after restart`);
    }

    // And the restarted server keeps syncing: an edit after the restart reaches another client.
    const dave = h.client(second);
    const hc = await h.find(carol, handles[2].url);
    const hd = await h.find(dave, handles[2].url);
    hc.change(d => d.hits.increment(1));
    await waitFor(
      () => JSON.stringify(sortedHeads(hd.heads())) === JSON.stringify(sortedHeads(hc.heads())),
      "dave to receive carol's post-restart increment",
    );
    assert.equal(hd.doc().hits.value, 43);
  }),
);
