// Scenario (h): a document shared the moment it is created. Client A creates a document and
// shares its URL at once; client B calls `repo.find(url)` (strict: it rejects on
// doc-unavailable) before A's first sync has reached the server. The server must ask the
// connected clients that may hold the document (A among them) instead of answering
// doc-unavailable at once.
//
// Deterministic: A connects through a TCP proxy (proxy.mjs) that holds back everything A sends
// until the server asks A for the document (or B's find has settled, which is the failure). No
// timing is involved, so each iteration takes the same path.
//
//   CONCORD_RACE_ITERATIONS=100 tests/js/run.sh --test-name-pattern='^h:'   # default 10
//   CONCORD_RACE_ROUNDS=5 CONCORD_RACE_DOCS=5 CONCORD_RACE_CLIENTS=30 ...   # load tests, default 1 round

import { test } from "node:test";
import assert from "node:assert/strict";

import { TEST_TIMEOUT_MS, plain, runConcordOk, waitConnected, waitServerHas, withHarness } from "./harness.mjs";

const envInt = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer (got ${process.env[name]})`);
  return v;
};
const ITERATIONS = envInt("CONCORD_RACE_ITERATIONS", 10);
const ROUNDS = envInt("CONCORD_RACE_ROUNDS", 1);
const DOCS = envInt("CONCORD_RACE_DOCS", 5);
const CLIENTS = envInt("CONCORD_RACE_CLIENTS", 30);

/** Settles with "ok" or the error, never rejects (for races between outcomes). */
const outcome = p => p.then(
  () => "ok",
  e => e,
);

/**
 * Holds `proxy` while `act()` runs, then waits until the server has sent a message about each of
 * `docIds` through the proxy (it asked their creator) or one of `finds` failed, and releases.
 * Returns true when every document was asked for.
 */
async function holdUntilAsked(proxy, docIds, finds) {
  const asked = Promise.all(
    docIds.map(id => proxy.waitServerSent(m => m.documentId === id, `the server to ask the creator for ${id}`)),
  );
  asked.catch(() => {}); // a failed find ends the wait first; the watchers then time out unobserved
  const firstFailure = new Promise(resolve => finds.forEach(f => f.catch(resolve)));
  const first = await Promise.race([asked.then(() => "asked"), firstFailure]);
  proxy.release();
  return first === "asked";
}

/** Awaits every find; fails with how many were rejected and the first error. */
async function expectAllFound(finds, label) {
  const results = await Promise.allSettled(finds);
  const failed = results.filter(r => r.status === "rejected");
  if (failed.length) {
    throw new Error(`${label}: ${failed.length} of ${finds.length} finds rejected; first: ${failed[0].reason.message}`);
  }
  return results.map(r => r.value);
}

test(
  `h: a document found before its creator's first sync reached the server (${ITERATIONS} times in a row)`,
  { timeout: TEST_TIMEOUT_MS + ITERATIONS * 3_000 },
  t =>
    withHarness(t, async h => {
      const server = await h.server();
      const proxy = await h.proxy(server);
      for (let i = 0; i < ITERATIONS; i++) {
        const alice = h.client({ syncUrl: proxy.syncUrl(server) });
        const bob = h.client(server);
        await waitConnected(alice);
        await waitConnected(bob);

        proxy.hold();
        const ha = alice.create({ title: "shared the moment it was created", iteration: i });
        const found = h.find(bob, ha.url); // strict: rejects if the server says doc-unavailable
        const asked = await holdUntilAsked(proxy, [ha.documentId], [found]);
        const result = await outcome(found);
        assert.equal(result, "ok", `iteration ${i}: bob's find failed: ${result.message ?? result}`);
        assert.ok(asked, `iteration ${i}: the server never asked alice`);
        const hb = await found;
        assert.deepEqual(plain(hb.doc()), { title: "shared the moment it was created", iteration: i });

        await h.closeClient(alice);
        await h.closeClient(bob);
      }
    }),
);

/** One owner creates DOCS documents while CLIENTS clients find all of them at once. */
async function loadRound(h, server, proxy) {
  const owner = h.client(proxy ? { syncUrl: proxy.syncUrl(server) } : server);
  const clients = Array.from({ length: CLIENTS }, () => h.client(server));
  await Promise.all([owner, ...clients].map(waitConnected));

  proxy?.hold();
  const handles = Array.from({ length: DOCS }, (_, d) => owner.create({ doc: d, items: [d, d + 1] }));
  const finds = clients.flatMap(c => handles.map(hd => h.find(c, hd.url)));
  if (proxy) await holdUntilAsked(proxy, handles.map(hd => hd.documentId), finds);
  const found = await expectAllFound(finds, `${CLIENTS} clients finding ${DOCS} new documents`);
  found.forEach((hd, k) => {
    const d = k % DOCS;
    assert.deepEqual(plain(hd.doc()), { doc: d, items: [d, d + 1] });
  });
  for (const repo of [owner, ...clients]) await h.closeClient(repo);
}

test(
  `h: under load, ${CLIENTS} clients find ${DOCS} documents held back at their creator (${ROUNDS} round(s))`,
  { timeout: TEST_TIMEOUT_MS + ROUNDS * 20_000 },
  t =>
    withHarness(t, async h => {
      const server = await h.server();
      const proxy = await h.proxy(server);
      for (let r = 0; r < ROUNDS; r++) await loadRound(h, server, proxy);
    }),
);

test(
  `h: under load, ${CLIENTS} clients find ${DOCS} documents the moment they are created, no proxy (${ROUNDS} round(s))`,
  { timeout: TEST_TIMEOUT_MS + ROUNDS * 20_000 },
  t =>
    withHarness(t, async h => {
      const server = await h.server();
      for (let r = 0; r < ROUNDS; r++) await loadRound(h, server, undefined);
    }),
);

test("h: only clients whose grant lets them read and write the document are asked for it", { timeout: TEST_TIMEOUT_MS }, t =>
  withHarness(t, async h => {
    const server = await h.server();
    const token = async (...args) =>
      (await runConcordOk(["token", "create", "--data", server.dataDir, "--ttl", "10m", ...args])).trim();
    const via = async tok => {
      const proxy = await h.proxy(server);
      const url = new URL(proxy.syncUrl(server));
      url.searchParams.set("token", tok);
      const repo = h.client({ syncUrl: url.toString() });
      await waitConnected(repo);
      return { proxy, repo };
    };

    const alice = await via(server.token); // the creator
    const other = alice.repo.create({ title: "another document" });
    await waitServerHas(alice.repo, other);

    alice.proxy.hold();
    const ha = alice.repo.create({ title: "new" });
    // Connected while alice's document exists only at alice: a client with a token for another
    // document, one with a read-only token for this one, one with full access.
    const carol = await via(await token("--principal", "carol", "--doc", other.url));
    const dave = await via(await token("--principal", "dave", "--doc", ha.url, "--read-only"));
    const erin = await via(await token("--principal", "erin"));
    const watch = p =>
      outcome(p.proxy.waitServerSent(m => m.documentId === ha.documentId, "a message about the new document", 2_000));
    const [carolHeard, daveHeard, erinHeard] = [watch(carol), watch(dave), watch(erin)];

    const bob = h.client(server);
    const found = h.find(bob, ha.url);
    assert.ok(await holdUntilAsked(alice.proxy, [ha.documentId], [found]), "the server asked alice");
    assert.deepEqual(plain((await found).doc()), { title: "new" });
    assert.equal(await erinHeard, "ok", "erin (full access) was asked too");
    for (const [name, heard] of [
      ["carol (another document only)", carolHeard],
      ["dave (read-only)", daveHeard],
    ]) {
      const r = await heard;
      assert.ok(r instanceof Error && /timed out/.test(r.message), `${name} heard of the document: ${r}`);
    }
  }),
);
