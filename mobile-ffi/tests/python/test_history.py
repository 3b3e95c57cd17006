"""History and document lists through the Python bindings: history() paging, diff(),
restore() as a new change, list_local(), and list_remote() against a real `concord serve`.

Run with test_concord (mobile-ffi/scripts/test.sh runs every module).
"""

import json
import os
import shutil
import tempfile
import time
import unittest

from concord_ffi import ConcordError, Repo

from test_concord import WAIT_MS, ServerTest


class LocalHistoryTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="concord-ffi-py-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    async def test_history_diff_restore_and_bad_heads(self):
        repo = await Repo.open(os.path.join(self.dir, "h.db"), [], None)
        try:
            doc = await repo.create()
            await doc.put("", json.dumps({"title": "v1", "n": 1}))
            v1 = doc.heads()
            await doc.put("title", '"v2"')
            await doc.delete("n")
            v2 = doc.heads()

            page = await doc.history()
            self.assertEqual(page.total, len(page.changes))
            self.assertGreaterEqual(page.total, 3)
            self.assertEqual(page.heads, v2)
            self.assertEqual(page.changes[0].hash, v2[0], "newest first")
            self.assertIsNone(page.next)
            paged, cursor = [], None
            for _ in range(page.total + 1):
                one = await doc.history(limit=1, cursor=cursor)
                paged += [c.hash for c in one.changes]
                cursor = one.next
                if cursor is None:
                    break
            self.assertEqual(paged, [c.hash for c in page.changes])
            newest = page.changes[0]
            self.assertGreaterEqual(newest.ops, 1)
            self.assertGreater(newest.time_ms, 0, "local writes carry the HLC stamp")

            patches = json.loads(doc.diff(v1, v2))
            actions = sorted(p["action"] for p in patches)
            self.assertEqual(actions, ["del", "put"], patches)
            self.assertEqual(json.loads(doc.diff(v2, v2)), [])

            self.assertTrue(await doc.restore(v1))
            self.assertEqual(json.loads(doc.get_json("")), {"title": "v1", "n": 1})
            self.assertEqual((await doc.history()).total, page.total + 1, "a new change on top")
            self.assertFalse(await doc.restore(v1), "restored already: nothing to write")
            self.assertFalse(await doc.restore(doc.heads()), "the current version: nothing to write")

            before = doc.heads()
            unknown = doc.heads()[0][:-4] + "1111"
            with self.assertRaises(ConcordError.InvalidArgument):
                await doc.restore([unknown])
            with self.assertRaises(ConcordError.InvalidArgument):
                await doc.restore(["4NMNnkMhL8jXrdJ9jamS58PAVdXu"])  # a document id, not a change
            with self.assertRaises(ConcordError.InvalidArgument):
                doc.diff(["nope"], v2)
            with self.assertRaises(ConcordError.InvalidArgument):
                await doc.history(cursor="nope")
            self.assertEqual(doc.heads(), before, "nothing changed")

            self.assertIn(doc.url(), await repo.list_local())
            with self.assertRaises(ConcordError.Network):
                await repo.list_remote()
        finally:
            await repo.shutdown()


class RemoteListTest(ServerTest):
    async def test_list_remote_pages_the_principals_documents(self):
        a = await self.open("a")
        created = []
        for i in range(3):
            doc = await a.create()
            await doc.put("i", str(i))
            await doc.wait_synced(WAIT_MS)
            created.append(doc.url())
        seen, cursor = [], None
        for _ in range(50):
            page = await a.list_remote(limit=2, cursor=cursor)
            self.assertLessEqual(len(page.documents), 2)
            seen += [d.url for d in page.documents]
            cursor = page.next
            if cursor is None:
                break
        for url in created:
            self.assertIn(url, seen)
        self.assertEqual(len(seen), len(set(seen)), "no entry twice")
        bad = await Repo.open(os.path.join(self.dir, "bad.db"), [self.server.url], "not-a-token")
        self.repos.append(bad)
        with self.assertRaises(ConcordError.Denied):
            await bad.list_remote()


def tearDownModule():
    # As in test_concord: let engine threads finish their last callbacks into Python.
    time.sleep(0.2)


if __name__ == "__main__":
    unittest.main()
