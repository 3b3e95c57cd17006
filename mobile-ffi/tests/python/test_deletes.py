"""Deleting documents through the Python bindings: locally, by another replica through a real
`concord serve` (the copy is purged and the listeners hear of it), and an offline edit to a
deleted document refused, with the event, when the replica reconnects.

Run with test_concord (mobile-ffi/scripts/test.sh runs both modules).
"""

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import unittest

from concord_ffi import ChangeOrigin, ConcordError, DeletedListener, Repo

from harness import eventually
from test_concord import WAIT_MS, ServerTest


class Deletions(DeletedListener):
    """Collects deletion events (called on a listener thread)."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def on_deleted(self, event):
        with self.lock:
            self.events.append(event)

    def of(self, origin):
        with self.lock:
            return [e for e in self.events if e.origin == origin]


async def purged(repo, url, timeout=15.0):
    """Waits until `repo` stores nothing of `url` (the purge is a storage write that follows
    the deletion's commit and event); raises AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while url in await repo.document_urls():
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still stored after {timeout}s")
        await asyncio.sleep(0.05)


class LocalDeleteTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="concord-ffi-py-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    async def test_delete_reports_and_refuses_later_use(self):
        repo = await Repo.open(os.path.join(self.dir, "r.db"), [], None)
        try:
            doc = await repo.create()
            other = await repo.create()
            await doc.put("", json.dumps({"x": 1, "y": 2}))
            await other.put("keep", "true")
            await doc.delete("y")  # with a path: deletes a key, not the document
            self.assertEqual(json.loads(doc.get_json("")), {"x": 1})
            on_doc, on_repo, on_other = Deletions(), Deletions(), Deletions()
            subs = [
                doc.subscribe_deleted(on_doc),
                repo.subscribe_deleted(on_repo),
                other.subscribe_deleted(on_other),
            ]
            self.assertIsNone(repo.deletion(doc.url()))

            await doc.delete()
            await eventually(
                lambda: len(on_doc.of(ChangeOrigin.LOCAL)) == 1
                and len(on_repo.of(ChangeOrigin.LOCAL)) == 1,
                what="local deletion events",
            )
            event = on_doc.events[0]
            self.assertEqual(event.url, doc.url())
            self.assertEqual(event.by, repo.peer_id())
            self.assertGreater(event.at_ms, 0)
            self.assertEqual(on_repo.events[0].at_ms, event.at_ms)
            deletion = repo.deletion(doc.url())
            self.assertEqual((deletion.by, deletion.confirmed), (repo.peer_id(), False))

            with self.assertRaises(ConcordError.Deleted):
                doc.get_json("")
            with self.assertRaises(ConcordError.Deleted):
                await doc.put("x", "2")
            with self.assertRaises(ConcordError.Deleted):
                await repo.find(doc.url())
            with self.assertRaises(ConcordError.Deleted):
                await doc.delete_document()
            await purged(repo, doc.url())
            self.assertEqual(on_other.events, [])
            self.assertEqual(json.loads(other.get_json("")), {"keep": True})
            for s in subs:
                s.cancel()
        finally:
            await repo.shutdown()

        # Reopened: still deleted (the tombstone is stored).
        again = await Repo.open(os.path.join(self.dir, "r.db"), [], None)
        try:
            with self.assertRaises(ConcordError.Deleted):
                await again.find(doc.url())
            self.assertIsNotNone(again.deletion(doc.url()))
        finally:
            await again.shutdown()


class RemoteDeleteTest(ServerTest):
    async def test_a_deletion_by_another_replica_purges_and_is_reported(self):
        a, b = await self.open("a"), await self.open("b")
        doc_a = await a.create()
        await doc_a.put("title", '"shared"')
        await doc_a.wait_synced(WAIT_MS)
        doc_b = await b.find(doc_a.url())
        on_doc, on_repo = Deletions(), Deletions()
        doc_b.subscribe_deleted(on_doc)
        b.subscribe_deleted(on_repo)
        self.assertIn(doc_a.url(), await b.document_urls())

        await doc_a.delete()
        await eventually(
            lambda: (d := a.deletion(doc_a.url())) is not None and d.confirmed,
            what="the server confirms the deletion",
        )
        await eventually(
            lambda: len(on_doc.of(ChangeOrigin.REMOTE)) == 1
            and len(on_repo.of(ChangeOrigin.REMOTE)) == 1,
            what="b's listeners hear of it",
        )
        self.assertEqual(on_doc.events[0].url, doc_a.url())
        with self.assertRaises(ConcordError.Deleted):
            doc_b.get_json("")
        with self.assertRaises(ConcordError.Deleted):
            await b.find(doc_a.url())
        await purged(b, doc_a.url())
        c = await self.open("c")
        with self.assertRaises(ConcordError.Deleted):
            await c.find(doc_a.url())

    async def test_an_offline_edit_to_a_deleted_document_is_refused_with_the_event(self):
        a, b = await self.open("a"), await self.open("b")
        doc_a = await a.create()
        await doc_a.put("title", '"shared"')
        await doc_a.wait_synced(WAIT_MS)
        url = doc_a.url()
        await (await b.find(url)).wait_synced(WAIT_MS)
        await b.shutdown()
        self.repos.remove(b)

        await doc_a.delete()
        await eventually(
            lambda: (d := a.deletion(url)) is not None and d.confirmed,
            what="the server confirms the deletion",
        )
        # b, offline, does not know: its edit commits locally.
        path = os.path.join(self.dir, "b.db")
        offline = await Repo.open(path, [], None)
        doc_b = await offline.find(url)
        await doc_b.put("title", '"offline edit"')
        self.assertEqual(json.loads(doc_b.get_json("title")), "offline edit")
        await offline.shutdown()

        # Online again: the server refuses the edit, b's app is told, the copy is gone.
        b = await Repo.open(path, [self.server.url], self.server.token)
        self.repos.append(b)
        on_repo = Deletions()
        b.subscribe_deleted(on_repo)
        try:
            await b.find(url)  # local copy first; the server then says it is deleted
        except ConcordError.Deleted:
            pass
        await eventually(
            lambda: [e.url for e in on_repo.of(ChangeOrigin.REMOTE)] == [url],
            what="b hears of the deletion",
        )
        with self.assertRaises(ConcordError.Deleted):
            await b.find(url)
        c = await self.open("c")
        with self.assertRaises(ConcordError.Deleted):
            await c.find(url)


def tearDownModule():
    # As in test_concord: let engine threads finish their last callbacks into Python.
    time.sleep(0.2)


if __name__ == "__main__":
    unittest.main()
