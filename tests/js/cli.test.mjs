// Scenario (e): Rust <-> JS. The `concord doc` CLI (a Rust client with its own replica) and stock
// automerge-repo JS clients read and edit each other's documents through a real `concord serve`.

import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { isDeepStrictEqual } from "node:util";

import { Counter, splice } from "@automerge/automerge-repo";

import {
  CONCORD_BIN,
  TEST_TIMEOUT_MS,
  WAIT_MS,
  concordDocOk,
  plain,
  waitFor,
  waitServerHas,
  withHarness,
} from "./harness.mjs";

// Fail loudly (not skip) when the binary has no `doc` subcommand: the scenario is required.
before(() => {
  const r = spawnSync(CONCORD_BIN, ["doc", "--help"], { encoding: "utf8", timeout: WAIT_MS });
  assert.equal(r.status, 0, `\`${CONCORD_BIN} doc --help\` failed: is the \`concord doc\` CLI built?\n${r.stderr}`);
});

/** `concord doc get URL [PATH]`, parsed. */
async function cliGet(replica, server, url, path) {
  const out = await concordDocOk(replica, server, path === undefined ? ["get", url] : ["get", url, path]);
  return JSON.parse(out);
}

/** Polls `concord doc get` until it returns `want` (bounded). */
async function waitCliSees(replica, server, url, want, label) {
  let last;
  try {
    await waitFor(async () => {
      last = await cliGet(replica, server, url);
      return isDeepStrictEqual(last, want);
    }, label);
  } catch (e) {
    e.message += `\nlast CLI value: ${JSON.stringify(last)}\nwanted: ${JSON.stringify(want)}`;
    throw e;
  }
}

test("e: the Rust CLI reads and edits a document a JS client created, and the JS client sees the edits", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const replica = await h.tempDir("concord-js-replica-");
    const alice = h.client(server);

    const ha = alice.create({ title: "from js", items: ["a"], hits: new Counter(1), notes: "hello" });
    ha.change(d => d.items.push("x"));
    await waitServerHas(alice, ha);

    // Rust reads what JS wrote, whole and by path.
    assert.deepEqual(await cliGet(replica, server, ha.url), { title: "from js", items: ["a", "x"], hits: 1, notes: "hello" });
    assert.equal(await cliGet(replica, server, ha.url, "title"), "from js");
    assert.equal(await cliGet(replica, server, ha.url, "items/1"), "x");

    // Rust edits: put (replace, append), delete, counter increment, text splice.
    await concordDocOk(replica, server, ["put", ha.url, "title", '"edited by rust"']);
    await concordDocOk(replica, server, ["put", ha.url, "items/-", '{"k": [1, 2], "ok": true}']);
    await concordDocOk(replica, server, ["delete", ha.url, "items/1"]);
    await concordDocOk(replica, server, ["increment", ha.url, "hits", "5"]);
    await concordDocOk(replica, server, ["text-splice", ha.url, "notes", "5", "0", " world"]);

    const want = { title: "edited by rust", items: ["a", { k: [1, 2], ok: true }], hits: 6, notes: "hello world" };
    await waitFor(() => isDeepStrictEqual(plain(ha.doc()), want), `the JS client to see the CLI's edits (${JSON.stringify(want)})`)
      .catch(e => {
        e.message += `\nJS value: ${JSON.stringify(plain(ha.doc()))}`;
        throw e;
      });
    // Types survive the round trip: the counter is still a counter for JS.
    assert.ok(ha.doc().hits instanceof Counter, "hits is still an automerge Counter");
    ha.change(d => d.hits.increment(4));
    // Strings the CLI wrote are collaborative text for JS too: JS can splice them.
    ha.change(d => splice(d, ["title"], "edited by rust".length, 0, ", then js"));
    await waitServerHas(alice, ha);
    await waitCliSees(replica, server, ha.url, { ...want, title: "edited by rust, then js", hits: 10 }, "the CLI to see the JS edits");
  }),
);

test("e: a document the Rust CLI created and edited is found and read by a fresh JS client, and JS edits reach the CLI", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const replica = await h.tempDir("concord-js-replica-");

    const url = (await concordDocOk(replica, server, ["create", '{"title": "from rust", "todos": []}'])).trim();
    assert.match(url, /^automerge:[1-9A-HJ-NP-Za-km-z]+$/, "create prints an automerge: URL");
    await concordDocOk(replica, server, ["put", url, "todos/-", '{"title": "milk", "done": false}']);
    await concordDocOk(replica, server, ["increment", url, "votes", "3"]);
    // Offline edit, then an explicit sync.
    await concordDocOk(replica, server, ["--offline", "text-splice", url, "todos/0/title", "4", "0", " and eggs"]);
    await concordDocOk(replica, server, ["sync"]);

    const bob = h.client(server);
    const hb = await h.find(bob, url);
    await waitFor(
      () => isDeepStrictEqual(plain(hb.doc()), { title: "from rust", todos: [{ title: "milk and eggs", done: false }], votes: 3 }),
      "the JS client to read the CLI's document",
    ).catch(e => {
      e.message += `\nJS value: ${JSON.stringify(plain(hb.doc()))}`;
      throw e;
    });
    assert.ok(hb.doc().votes instanceof Counter, "votes (created by `increment`) is a Counter for JS");

    // JS edits flow back to the CLI.
    hb.change(d => {
      d.todos[0].done = true;
      d.todos.push({ title: "bread", done: false });
      d.votes.increment(2);
    });
    await waitServerHas(bob, hb);
    await waitCliSees(
      replica,
      server,
      url,
      {
        title: "from rust",
        todos: [
          { title: "milk and eggs", done: true },
          { title: "bread", done: false },
        ],
        votes: 5,
      },
      "the CLI to see the JS edits",
    );
  }),
);

test("g: a document written with conflict policies reads as plain JSON for a stock JS client", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const eu = await h.tempDir("concord-js-eu-");
    const us = await h.tempDir("concord-js-us-");
    const url = (await concordDocOk(eu, server, ["create", '{"name": "Alice", "cart": {}}'])).trim();
    await concordDocOk(us, server, ["get", url]);
    // Concurrent offline renames (HLC-stamped changes), synced, then settled with `resolve`.
    await concordDocOk(eu, server, ["--offline", "put", url, "name", '"Alice Smith"']);
    await concordDocOk(us, server, ["--offline", "put", url, "name", '"Alice Jones"']);
    await concordDocOk(eu, server, ["sync"]);
    await concordDocOk(us, server, ["sync"]);
    await concordDocOk(eu, server, ["sync"]);
    const resolvedName = JSON.parse(await concordDocOk(eu, server, ["--policy", "name=lww", "get", "--resolved", url, "name"]));
    await concordDocOk(eu, server, ["--policy", "name=lww", "resolve", url, "name", JSON.stringify(resolvedName)]);
    await concordDocOk(eu, server, ["--policy", "cart=add-wins-set", "resolve", url, "cart", '["milk"]']);
    const expected = JSON.parse(await concordDocOk(eu, server, ["get", url]));
    assert.deepEqual(expected, { name: resolvedName, cart: { milk: true } });

    const js = h.client(server);
    const handle = await h.find(js, url);
    await waitFor(() => isDeepStrictEqual(plain(handle.doc()), expected), "the JS client to read the same plain JSON").catch(e => {
      e.message += `\nJS value: ${JSON.stringify(plain(handle.doc()))}`;
      throw e;
    });
    assert.equal(typeof handle.doc().name, "string", "a policy-managed string is a plain string for JS");
  }),
);
