"""Provokes an error in every exported function group of concord_ffi and checks that each one
arrives as a ConcordError exception (never uniffi's InternalError, which a caught Rust panic
becomes, and never an abort, which would kill this process: test_concord.py runs it as a child and
checks its exit code). Prints "ALL GROUPS RAISED ConcordError" at the end.
"""

import asyncio
import os
import sys
import tempfile

import concord_ffi
from concord_ffi import ConcordError, Durability, Edit, Repo

failures = []
raised = []


class Throwing(concord_ffi.ChangeListener):
    def __init__(self):
        self.calls = 0

    def on_change(self, event):
        self.calls += 1
        raise RuntimeError("a listener bug")


class Quiet(concord_ffi.SyncStatusListener, concord_ffi.EphemeralListener,
            concord_ffi.DeletedListener):
    def on_status(self, status):
        pass

    def on_deleted(self, event):
        pass

    def on_message(self, message):
        pass


async def expect(group, kind, thunk):
    try:
        result = thunk()
        if asyncio.iscoroutine(result):
            await result
    except ConcordError as e:
        if not isinstance(e, kind):
            failures.append(f"{group}: expected {kind.__name__}, got {e!r}")
        else:
            raised.append(group)
        return
    except BaseException as e:  # InternalError (a panic) or anything else
        failures.append(f"{group}: not a ConcordError: {type(e).__name__}: {e}")
        return
    failures.append(f"{group}: no exception")


async def main():
    tmp = os.environ.get("CONCORD_FFI_TMP") or tempfile.mkdtemp()
    db = os.path.join(tmp, "provoke.db")
    E = ConcordError

    # Repo constructors.
    await expect("Repo() bad url", E.InvalidUrl, lambda: Repo(db, ["ftp://x"], None))
    await expect("Repo() empty path", E.InvalidArgument, lambda: Repo("", [], None))
    await expect("Repo.open bad url", E.InvalidUrl, lambda: Repo.open(db, ["ws://"], "t"))
    await expect("Repo.open bad port", E.InvalidUrl, lambda: Repo.open(db, ["ws://h:99999/"], None))
    await expect("Repo.open unopenable file", E.Storage,
                 lambda: Repo.open(os.path.join(tmp, "no", "such", "dir", "x.db"), [], None))

    repo = await Repo.open(db, [], None)
    doc = await repo.create()
    await doc.put("", '{"list": [1], "text": "abc", "n": 1}')

    # Repo methods.
    await expect("find bad url", E.InvalidUrl, lambda: repo.find(""))
    await expect("find garbage", E.InvalidUrl, lambda: repo.find("automerge:0OIl"))
    await expect("find missing", E.NotFound, lambda: repo.find("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu"))
    await expect("wait_connected offline", E.Network, lambda: repo.wait_connected(10))

    # Reads.
    await expect("get bad path", E.InvalidPath, lambda: doc.get("a//b"))
    await expect("get below scalar", E.InvalidPath, lambda: doc.get("n/x"))
    await expect("get below text", E.InvalidPath, lambda: doc.get("text/0"))
    await expect("get_json bad index", E.InvalidPath, lambda: doc.get_json("list/x"))

    # Writes, one per operation, plus a batch.
    await expect("put bad json", E.InvalidJson, lambda: doc.put("a", "nope"))
    await expect("put missing parent", E.NotFound, lambda: doc.put("no/such", "1"))
    await expect("delete root", E.InvalidPath, lambda: doc.delete(""))
    await expect("insert not a list", E.WrongType, lambda: doc.insert("text", 0, "1"))
    await expect("insert past end", E.InvalidArgument, lambda: doc.insert("list", 5, "1"))
    await expect("insert huge index", E.InvalidArgument, lambda: doc.insert("list", 2**64 - 1, "1"))
    await expect("splice not text", E.WrongType, lambda: doc.splice_text("list", 0, 0, "x"))
    await expect("splice huge delete", E.InvalidArgument,
                 lambda: doc.splice_text("text", 1, 2**64 - 1, "x"))
    await expect("increment not counter", E.WrongType, lambda: doc.increment("n", 1))
    await expect("apply bad batch", E.InvalidJson,
                 lambda: doc.apply([Edit.PUT(path="a", json="1"), Edit.PUT(path="b", json="{")]))

    # Waits and presence.
    await expect("wait_synced offline", E.Network, lambda: doc.wait_synced(10))
    await expect("wait_durable offline", E.Network, lambda: doc.wait_durable(Durability.SERVER, 10))
    await expect("broadcast empty", E.InvalidArgument, lambda: doc.broadcast(b""))

    # Deletion: a deleted document refuses everything with Deleted.
    gone = await repo.create()
    await gone.delete()
    await expect("delete twice", E.Deleted, lambda: gone.delete_document())
    await expect("get deleted", E.Deleted, lambda: gone.get(""))
    await expect("put deleted", E.Deleted, lambda: gone.put("a", "1"))
    await expect("find deleted", E.Deleted, lambda: repo.find(gone.url()))
    await expect("deletion bad url", E.InvalidUrl, lambda: repo.deletion("automerge:0OIl"))

    # A listener that throws: counted, delivery goes on, nothing aborts.
    listener = Throwing()
    sub = doc.subscribe_changes(listener)
    await doc.put("n", "2")
    await doc.put("n", "3")
    for _ in range(200):
        if sub.failures() >= 2:
            break
        await asyncio.sleep(0.02)
    if sub.failures() < 2 or listener.calls < 2:
        failures.append(f"throwing listener: failures={sub.failures()} calls={listener.calls}")
    else:
        raised.append("listener throws")
    sub.cancel()
    sub.cancel()  # idempotent

    # After shutdown, every group answers Closed.
    await repo.shutdown()
    await repo.shutdown()  # idempotent
    await expect("create after shutdown", E.Closed, lambda: repo.create())
    await expect("find after shutdown", E.Closed, lambda: repo.find(doc.url()))
    await expect("document_urls after shutdown", E.Closed, lambda: repo.document_urls())
    await expect("subscribe_sync_status after shutdown", E.Closed,
                 lambda: repo.subscribe_sync_status(Quiet()))
    await expect("get after shutdown", E.Closed, lambda: doc.get(""))
    await expect("heads after shutdown", E.Closed, lambda: doc.heads())
    await expect("put after shutdown", E.Closed, lambda: doc.put("a", "1"))
    await expect("wait_durable after shutdown", E.Closed,
                 lambda: doc.wait_durable(Durability.LOCAL, 10))
    await expect("is_synced after shutdown", E.Closed, lambda: doc.is_synced())
    await expect("broadcast after shutdown", E.Closed, lambda: doc.broadcast(b"x"))
    await expect("subscribe_changes after shutdown", E.Closed,
                 lambda: doc.subscribe_changes(Throwing()))
    await expect("subscribe_ephemeral after shutdown", E.Closed,
                 lambda: doc.subscribe_ephemeral(Quiet()))
    await expect("delete after shutdown", E.Closed, lambda: doc.delete())
    await expect("deletion after shutdown", E.Closed, lambda: repo.deletion(doc.url()))
    await expect("subscribe_deleted after shutdown", E.Closed,
                 lambda: repo.subscribe_deleted(Quiet()))
    await expect("doc subscribe_deleted after shutdown", E.Closed,
                 lambda: doc.subscribe_deleted(Quiet()))

    for line in raised:
        print(f"  raised: {line}")
    if failures:
        for f in failures:
            print(f"FAILED {f}")
        sys.exit(1)
    print(f"ALL GROUPS RAISED ConcordError ({len(raised)} cases)")
    # Let the engine threads leave their last callbacks into Python (async completions) before
    # the interpreter finalizes: a thread that re-takes the GIL during finalization is killed
    # with pthread_exit, which aborts when it unwinds through Rust frames. See the README.
    await asyncio.sleep(0.2)


asyncio.run(main())
