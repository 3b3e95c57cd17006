// The package as JavaScript sees it (pkg/nodejs): bad input of every kind is a thrown `Error`
// with a `kind`, never a trap that kills the module; the module keeps working afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Repo } = require("../../pkg/nodejs/concord_wasm.js");

async function rejectsWith(promiseOrFn, kind) {
  let error;
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof Error, `expected an Error of kind ${kind}, got ${error}`);
  assert.equal(error.kind, kind, `kind of: ${error.message}`);
  assert.ok(error.message.length > 10, "the message says what went wrong");
  assert.doesNotMatch(error.message, /unreachable/);
  return error;
}

test("bad arguments, URLs and a closed repo are typed errors", async () => {
  await rejectsWith(Repo.open("nope"), "argument");
  await rejectsWith(Repo.open({ servers: "https://example.com/sync" }), "url");
  await rejectsWith(Repo.open({ servers: ["ws://"] }), "url");
  await rejectsWith(Repo.open({ servers: [42] }), "argument");
  await rejectsWith(Repo.open({ token: 7, servers: "ws://127.0.0.1:1/" }), "argument");
  await rejectsWith(Repo.open({ database: "x" }), "unsupported"); // no IndexedDB in Node
  await rejectsWith(Repo.open({ schema: { a: 1 } }), "argument");

  const repo = await Repo.open({});
  const doc = await repo.create({ text: "hi", list: [] });
  await rejectsWith(repo.find("https://not-automerge"), "url");
  await rejectsWith(repo.find({}), "argument");
  await rejectsWith(doc.put(Symbol("x"), 1), "argument");
  await rejectsWith(doc.put("a", () => 1), "argument");
  await rejectsWith(doc.put("a", 10n), "argument");
  await rejectsWith(doc.spliceText("text", "0", 0, "x"), "argument");
  await rejectsWith(doc.spliceText("text", NaN, 0, "x"), "argument");
  await rejectsWith(doc.spliceText("text", 0, 0, 5), "argument");
  await rejectsWith(doc.insert("list", -1, 1), "argument");
  await rejectsWith(doc.insert("text", 0, 1), "path");
  await rejectsWith(doc.increment("text"), "path");
  await rejectsWith(doc.change(d => d.put({}, 1)), "change");
  await rejectsWith(() => doc.get(3.5), "argument");
  await rejectsWith(() => doc.on("change"), "argument");
  await rejectsWith(() => doc.broadcast(undefined), "argument");
  await rejectsWith(doc.waitDurable("quorum"), "unsupported");
  await rejectsWith(() => repo.setOnline(1), "argument");

  // Still alive: a normal round trip works.
  await doc.spliceText("text", 2, 0, " there");
  await doc.insert("list", 0, { ok: true });
  assert.deepEqual(doc.toJSON(), { text: "hi there", list: [{ ok: true }] });

  repo.close();
  await rejectsWith(doc.put("text", "x"), "closed");
  await rejectsWith(repo.create(), "closed");
  await rejectsWith(() => doc.toJSON(), "closed");
  await rejectsWith(() => repo.on("status", () => {}), "closed");
  assert.equal(repo.status, "closed");

  // A freed handle throws a plain Error from the bindings, and the module survives that too.
  doc.free();
  assert.throws(() => doc.toJSON());
  const again = await Repo.open({});
  const d2 = await again.create({ n: 1 });
  await d2.increment("m", 2);
  assert.deepEqual(d2.toJSON(), { n: 1, m: 2 });
  again.close();
});
