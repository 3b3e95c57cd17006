"""The Python bindings (concord_ffi) against a real `concord serve`.

Run through mobile-ffi/scripts/test.sh, or by hand:
    PYTHONPATH=mobile-ffi/bindings/python CONCORD_BIN=target/debug/concord \
        python3 -m unittest discover -s mobile-ffi/tests/python -v
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from concord_ffi import (
    ChangeListener,
    ChangeOrigin,
    ConcordError,
    Durability,
    Edit,
    EphemeralListener,
    Repo,
    SyncStatus,
    SyncStatusListener,
    Value,
)

from harness import Server, eventually

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT_MS = 15_000


class Changes(ChangeListener):
    """Collects change events (called on a listener thread)."""

    def __init__(self, gate=None):
        self.events = []
        self.lock = threading.Lock()
        self.gate = gate

    def on_change(self, event):
        if self.gate is not None:
            self.gate.wait(30)
        with self.lock:
            self.events.append(event)

    def remote(self):
        with self.lock:
            return [e for e in self.events if e.origin == ChangeOrigin.REMOTE]

    def all(self):
        with self.lock:
            return list(self.events)


class Statuses(SyncStatusListener):
    def __init__(self):
        self.seen = []

    def on_status(self, status):
        self.seen.append(status)


class Messages(EphemeralListener):
    def __init__(self):
        self.seen = []

    def on_message(self, message):
        self.seen.append(message)


class ServerTest(unittest.IsolatedAsyncioTestCase):
    """One server for the class; a fresh directory of SQLite files per test."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server().start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="concord-ffi-py-")
        self.repos = []

    async def asyncTearDown(self):
        for repo in self.repos:
            await repo.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def open(self, name, online=True):
        servers = [self.server.url] if online else []
        repo = await Repo.open(os.path.join(self.dir, name + ".db"), servers, self.server.token)
        self.repos.append(repo)
        return repo

    @staticmethod
    def doc_json(doc):
        return json.loads(doc.get_json(""))


class SyncTest(ServerTest):
    async def test_offline_edits_converge_with_concurrent_online_edits(self):
        t0 = time.monotonic()
        alice = await self.open("alice")
        doc = await alice.create()
        await doc.put("", json.dumps({"title": "groceries", "items": []}))
        await doc.wait_synced(WAIT_MS)
        url = doc.url()

        # Bob fetches the document through the server, then closes his app.
        bob = await self.open("bob")
        bob_doc = await bob.find(url)
        self.assertEqual(self.doc_json(bob_doc), {"title": "groceries", "items": []})
        await bob.shutdown()

        # Bob, offline (a repo with no server URLs on the same file), edits...
        bob_offline = await self.open("bob", online=False)
        offline_doc = await bob_offline.find(url)
        await offline_doc.insert("items", 0, '"milk"')
        await offline_doc.splice_text("title", 0, 0, "weekly ")
        with self.assertRaises(ConcordError.Network):
            await offline_doc.wait_synced(1000)
        await bob_offline.shutdown()

        # ...while Alice edits online at the same time, listening for remote changes.
        changes = Changes()
        sub = doc.subscribe_changes(changes)
        await doc.put("owner", '"alice"')
        await doc.wait_synced(WAIT_MS)

        # Bob comes back online: his offline edits sync and he receives Alice's.
        bob_again = await self.open("bob")
        bob_doc = await bob_again.find(url)
        await bob_doc.wait_synced(WAIT_MS)
        await eventually(changes.remote, what="Alice's listener to see Bob's change")
        await eventually(lambda: doc.heads() == bob_doc.heads(), what="identical heads")

        expected = {"items": ["milk"], "owner": "alice", "title": "weekly groceries"}
        self.assertEqual(self.doc_json(doc), expected)
        self.assertEqual(self.doc_json(bob_doc), expected)
        self.assertEqual(doc.get("title"), Value.TEXT(value="weekly groceries"))
        local = [e for e in changes.all() if e.origin == ChangeOrigin.LOCAL]
        self.assertTrue(local, "the listener also reports local writes")
        self.assertEqual(changes.all()[-1].heads, doc.heads())
        sub.cancel()
        print(f"  converged in {time.monotonic() - t0:.2f}s", file=sys.stderr)

    async def test_concurrent_online_writers_converge(self):
        a, b = await self.open("a"), await self.open("b")
        doc_a = await a.create()
        await doc_a.put("", '{"n": 0, "log": []}')
        # Create the counter once: two replicas creating it concurrently would be two conflicting
        # puts (one wins), not one counter.
        await doc_a.increment("hits", 0)
        await doc_a.wait_synced(WAIT_MS)
        doc_b = await b.find(doc_a.url())
        for i in range(5):
            await doc_a.increment("hits", 1)
            await doc_b.increment("hits", 2)
            await doc_a.insert("log", 0, json.dumps(f"a{i}"))
            await doc_b.apply([Edit.PUT(path="log/-", json=json.dumps(f"b{i}")),
                               Edit.PUT(path="n", json=str(i))])
        await doc_a.wait_synced(WAIT_MS)
        await doc_b.wait_synced(WAIT_MS)
        await eventually(lambda: doc_a.heads() == doc_b.heads(), what="identical heads")
        self.assertEqual(doc_a.get("hits"), Value.COUNTER(value=15))
        self.assertEqual(self.doc_json(doc_a), self.doc_json(doc_b))
        self.assertEqual(len(self.doc_json(doc_a)["log"]), 10)

    async def test_change_listener_receives_the_remote_change(self):
        a, b = await self.open("a"), await self.open("b")
        doc_a = await a.create()
        await doc_a.put("status", '"draft"')
        await doc_a.wait_synced(WAIT_MS)
        doc_b = await b.find(doc_a.url())
        changes = Changes()
        sub = doc_b.subscribe_changes(changes)
        await doc_a.put("status", '"published"')
        await eventually(
            lambda: any(e.heads == doc_a.heads() for e in changes.remote()),
            what="a remote change event carrying the writer's heads",
        )
        self.assertEqual(doc_b.get("status"), Value.TEXT(value="published"))
        self.assertTrue(all(e.url == doc_a.url() for e in changes.all()))
        sub.cancel()
        self.assertFalse(sub.is_active())

    async def test_durability_waits(self):
        repo = await self.open("a")
        doc = await repo.create()
        await doc.put("x", "1")
        await doc.wait_durable(Durability.LOCAL, WAIT_MS)
        await doc.wait_durable(Durability.SERVER, WAIT_MS)
        self.assertTrue(doc.is_synced())
        await doc.put("x", "2")
        await doc.wait_synced(WAIT_MS)
        self.assertTrue(repo.is_connected())

    async def test_wait_synced_times_out_without_a_reachable_server(self):
        dead = Server().start()  # learn a free port, then stop the server on it
        dead.stop()
        repo = await Repo.open(os.path.join(self.dir, "x.db"), [dead.url], None)
        self.repos.append(repo)
        doc = await repo.create()
        await doc.put("a", "1")  # local writes never wait for the network
        t = time.monotonic()
        with self.assertRaises(ConcordError.Timeout):
            await doc.wait_synced(300)
        self.assertLess(time.monotonic() - t, 5)
        with self.assertRaises(ConcordError.Timeout):
            await repo.wait_connected(200)

    async def test_sync_status_listener_sees_connect_and_disconnect(self):
        own = Server().start()
        try:
            repo = await Repo.open(os.path.join(self.dir, "s.db"), [own.url], own.token)
            self.repos.append(repo)
            statuses = Statuses()
            sub = repo.subscribe_sync_status(statuses)
            await eventually(lambda: any(s.is_CONNECTED() for s in statuses.seen), what="Connected")
        finally:
            own.stop()
        await eventually(lambda: statuses.seen[-1].is_DISCONNECTED(), what="Disconnected")
        self.assertFalse(repo.is_connected())
        sub.cancel()

    async def test_presence_messages_reach_the_other_replica(self):
        a, b = await self.open("a"), await self.open("b")
        doc_a = await a.create()
        await doc_a.put("x", "1")
        await doc_a.wait_synced(WAIT_MS)
        doc_b = await b.find(doc_a.url())
        await doc_b.wait_synced(WAIT_MS)
        messages = Messages()
        sub = doc_b.subscribe_ephemeral(messages)

        def received():
            doc_a.broadcast(b'{"cursor": 3}')  # repeat: presence is best-effort
            return messages.seen

        seen = await eventually(received, what="an ephemeral message")
        self.assertEqual(seen[0].data, b'{"cursor": 3}')
        self.assertEqual(seen[0].from_peer, a.peer_id())
        sub.cancel()

    async def test_a_slow_listener_does_not_slow_writes(self):
        repo = await self.open("a", online=False)
        doc = await repo.create()
        gate = threading.Event()
        stuck = Changes(gate)
        sub = doc.subscribe_changes(stuck)
        t = time.monotonic()
        for i in range(150):  # the listener is stuck on the first event all along
            await doc.put("i", str(i))
        elapsed = time.monotonic() - t
        gate.set()
        self.assertLess(elapsed, 20, "writes waited for the listener")
        await eventually(lambda: stuck.all() and stuck.all()[-1].heads == doc.heads(),
                         what="the listener to catch up with the latest heads")
        events = stuck.all()
        coalesced = sum(e.coalesced for e in events)
        # At most 1 in the listener + 64 queued, the rest merged into the newest queued event.
        self.assertLessEqual(len(events), 1 + 64)
        self.assertGreater(coalesced, 0)
        self.assertLessEqual(len(events) + coalesced + sub.dropped(), 150)
        print(f"  150 writes in {elapsed:.2f}s with a stuck listener; {len(events)} events, "
              f"{coalesced} coalesced", file=sys.stderr)
        sub.cancel()

    async def test_token_is_sent_and_required_by_the_server(self):
        if self.server.token is None:
            self.skipTest("this server does not require tokens")
        repo = await Repo.open(os.path.join(self.dir, "t.db"), [self.server.url], None)
        self.repos.append(repo)
        with self.assertRaises(ConcordError.Timeout):
            await repo.wait_connected(1500)
        with_token = await self.open("u")
        self.assertTrue(with_token.has_token())
        await with_token.wait_connected(WAIT_MS)


class OfflineTest(unittest.IsolatedAsyncioTestCase):
    """No server: typed reads, the blocking constructor, invalid input."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="concord-ffi-py-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    async def test_typed_reads_and_writes(self):
        repo = Repo(os.path.join(self.dir, "r.db"), [], None)  # blocking constructor
        doc = await repo.create()
        await doc.put("", json.dumps({"todos": [{"title": "milk", "done": False}], "n": 1.5, "k": None}))
        await doc.insert("todos", 0, json.dumps({"title": "eggs", "done": True}))
        await doc.splice_text("todos/1/title", 4, 0, " and honey")
        await doc.increment("count", 5)
        await doc.delete("k")
        self.assertEqual(doc.get("todos/0/done"), Value.BOOL(value=True))
        self.assertEqual(doc.get("todos/1/title"), Value.TEXT(value="milk and honey"))
        self.assertEqual(doc.get("n"), Value.FLOAT(value=1.5))
        self.assertEqual(doc.get("count"), Value.COUNTER(value=5))
        self.assertIsNone(doc.get("k"))
        self.assertIsNone(doc.get("todos/9"))
        root = doc.get("")
        self.assertTrue(root.is_OBJECT())
        self.assertEqual(sorted(root.entries.keys()), ["count", "n", "todos"])
        self.assertTrue(root.entries["todos"].is_ARRAY())
        self.assertEqual(json.loads(doc.get_json("todos/1")), {"title": "milk and honey", "done": False})
        self.assertIsNone(doc.get_json("nothing/here"))
        self.assertEqual(await repo.document_urls(), [doc.url()])
        self.assertEqual(len(doc.heads()), 1)
        await repo.shutdown()

    async def test_conflict_policies(self):
        repo = Repo(os.path.join(self.dir, "p.db"), [], None)
        doc = await repo.create()
        await doc.put("", json.dumps({"name": "Alice", "tags": {"a": True}}))
        self.assertEqual(json.loads(doc.get_resolved("name", ["name=lww"])), "Alice")
        self.assertEqual(json.loads(doc.get_resolved("tags", ["tags=add-wins-set"])), ["a"])
        self.assertEqual(json.loads(doc.conflicts_json("name")), [])
        await doc.resolve("name", json.dumps("Alice Smith"), ["name=lww"])
        self.assertEqual(json.loads(doc.get_json("name")), "Alice Smith")
        with self.assertRaises(ConcordError.WrongType):
            doc.get_resolved("name", ["name=counter"])
        with self.assertRaises(ConcordError.InvalidArgument):
            doc.get_resolved("name", ["name=no-such-policy"])
        await repo.shutdown()

    async def test_invalid_input_raises_the_mapped_exception(self):
        path = os.path.join(self.dir, "r.db")
        with self.assertRaises(ConcordError.InvalidUrl):
            await Repo.open(path, ["http://127.0.0.1:1/sync"], None)
        with self.assertRaises(ConcordError.InvalidUrl):
            Repo(path, ["not a url"], None)
        repo = await Repo.open(path, [], None)
        doc = await repo.create()
        with self.assertRaises(ConcordError.InvalidUrl):
            await repo.find("automerge:definitely-not-an-id")
        with self.assertRaises(ConcordError.NotFound):
            await repo.find("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu")  # valid id, no such doc
        with self.assertRaises(ConcordError.InvalidPath):
            await doc.put("a//b", "1")
        with self.assertRaises(ConcordError.InvalidPath):
            doc.get("~2")
        with self.assertRaises(ConcordError.InvalidJson):
            await doc.put("a", "{not json")
        with self.assertRaises(ConcordError.InvalidJson):
            await doc.put("", "[1, 2]")  # the root must be an object
        with self.assertRaises(ConcordError.NotFound):
            await doc.delete("missing")
        await doc.put("t", '"text"')
        with self.assertRaises(ConcordError.WrongType):
            await doc.increment("t", 1)
        with self.assertRaises(ConcordError.InvalidArgument):
            await doc.splice_text("t", 99, 0, "x")
        # A failed batch leaves nothing applied.
        with self.assertRaises(ConcordError.NotFound):
            await doc.apply([Edit.PUT(path="ok", json="1"), Edit.DELETE(path="missing")])
        self.assertIsNone(doc.get("ok"))
        # Every error is a ConcordError with a message.
        try:
            await doc.put("a//b", "1")
        except ConcordError as e:
            self.assertIn("a//b", str(e))
        await repo.shutdown()

    def test_no_call_aborts_the_process(self):
        """Errors provoked in every exported function group, in a child process: an abort (a
        panic crossing the boundary) would kill it; it must exit 0 having seen only
        ConcordError exceptions."""
        script = os.path.join(HERE, "provoke_errors.py")
        env = dict(os.environ, CONCORD_FFI_TMP=self.dir)
        done = subprocess.run([sys.executable, script], env=env, capture_output=True,
                              text=True, timeout=120)
        sys.stderr.write(done.stdout[-2000:])
        self.assertEqual(done.returncode, 0, done.stderr[-4000:])
        self.assertIn("ALL GROUPS RAISED ConcordError", done.stdout)


def tearDownModule():
    # Let engine threads finish their last callbacks into Python (async completions) before the
    # interpreter finalizes; see provoke_errors.py and the README ("Python: exiting").
    time.sleep(0.2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
