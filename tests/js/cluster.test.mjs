// Scenario (g): a cluster. Three `concord serve --database` nodes on one throwaway PostgreSQL;
// stock JS clients on nodes 1 and 2 and the Rust `concord doc` CLI on node 3 edit one document
// concurrently and converge; presence (ephemeral messages) crosses nodes, reaches the other
// clients of the document once, and never comes back to its sender; the cross-node delivery
// latency between the JS clients is printed (p50/p99, measured, not asserted).

import { test } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";

import { concordDocOk, plain, sleep, waitFor, waitServerHas, withHarness, withTimeout } from "./harness.mjs";

/** Collects the ephemeral messages a handle receives. */
function inbox(handle) {
  const got = [];
  handle.on("ephemeral-message", ({ senderId, message }) => got.push({ senderId, message }));
  return got;
}

const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))];
};

test("cluster: JS and Rust clients on three cluster nodes edit one document, converge and see each other's presence", { timeout: 90_000 }, t =>
  withHarness(t, async h => {
    const pg = await h.postgres();
    const nodes = [];
    for (const id of ["js-1", "js-2", "js-3"]) nodes.push(await h.node(pg, id));
    const alice = h.client(nodes[0]);
    const bob = h.client(nodes[1]);
    const replica = await h.tempDir("concord-js-replica-");

    const ha = alice.create({ title: "cluster", log: [] });
    await waitServerHas(alice, ha);
    const hb = await h.find(bob, ha.url);

    // Concurrent edits: alice (node 1) and bob (node 2) each push 20 entries and set a key; the
    // Rust CLI (node 3) sets its own keys meanwhile.
    const rust = (async () => {
      for (let i = 0; i < 3; i++) await concordDocOk(replica, nodes[2], ["put", ha.url, `rust${i}`, String(i)]);
    })();
    for (let i = 0; i < 20; i++) {
      ha.change(d => d.log.push(`a${i}`));
      hb.change(d => d.log.push(`b${i}`));
      if (i % 5 === 0) await sleep(10);
    }
    ha.change(d => (d.alice = true));
    hb.change(d => (d.bob = true));
    await rust;

    const complete = d => d.alice && d.bob && d.rust2 === 2 && d.log?.length === 40;
    await waitFor(() => complete(ha.doc()) && complete(hb.doc()), "both JS clients to hold every edit")
      .catch(e => {
        e.message += `\nalice: ${JSON.stringify(plain(ha.doc()))}\nbob: ${JSON.stringify(plain(hb.doc()))}`;
        throw e;
      });
    await waitFor(() => isDeepStrictEqual(plain(ha.doc()), plain(hb.doc())), "alice and bob to converge");
    // The Rust client on node 3 converges to the same value.
    const want = plain(ha.doc());
    await waitFor(async () => {
      const got = JSON.parse(await concordDocOk(replica, nodes[2], ["get", ha.url]));
      return isDeepStrictEqual(got, want);
    }, "the Rust CLI on node 3 to read the converged document");

    // Presence: alice (node 1) -> bob (node 2), and back; never echoed to the sender.
    const toBob = inbox(hb);
    const toAlice = inbox(ha);
    ha.broadcast({ user: "alice", cursor: 3 });
    await waitFor(() => toBob.length >= 1, "bob (node 2) to receive alice's presence");
    assert.deepEqual(toBob.map(m => m.message), [{ user: "alice", cursor: 3 }]);
    assert.equal(toBob[0].senderId, alice.peerId);
    hb.broadcast({ user: "bob", cursor: 9 });
    await waitFor(() => toAlice.length >= 1, "alice (node 1) to receive bob's presence");
    await sleep(300);
    assert.deepEqual(toAlice.map(m => m.message), [{ user: "bob", cursor: 9 }], `alice gets bob's, not her own back: ${JSON.stringify(toAlice)} alice=${alice.peerId} bob=${bob.peerId}`);
    assert.equal(toBob.length, 1, "bob gets alice's once, not his own back");

    // Delivery latency from alice (node 1) to bob (node 2), next to carol (node 1, same node).
    const carol = h.client(nodes[0]);
    const hc = await h.find(carol, ha.url);
    const delivery = async (to, key) => {
      const samples = [];
      for (let i = 0; i < 30; i++) {
        const arrived = new Promise(resolve => {
          const onChange = ({ doc }) => {
            if (doc[key] === i) {
              to.off("change", onChange);
              resolve(performance.now());
            }
          };
          to.on("change", onChange);
        });
        const started = performance.now();
        ha.change(d => (d[key] = i));
        samples.push((await withTimeout(arrived, `${key} ${i} to arrive`)) - started);
        // automerge-repo throttles a client's syncs to one per 100 ms: stay clear of it.
        await sleep(120);
      }
      return `p50 ${percentile(samples, 50).toFixed(1)} ms, p99 ${percentile(samples, 99).toFixed(1)} ms`;
    };
    const cross = await delivery(hb, "cross");
    const same = await delivery(hc, "same");
    console.log(`JS delivery, 30 writes each: cross-node (node 1 -> node 2) ${cross}; same node ${same}`);
  }),
);
