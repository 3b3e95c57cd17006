"""Test harness: a real `concord serve` process on 127.0.0.1:0, and bounded waits.

The server binary comes from $CONCORD_BIN. The server prints its address on stdout, and (on
loopback, with `--dev`) a development token, which the tests pass to their repos.
"""

import asyncio
import ctypes
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time

LISTENING = re.compile(r"concord listening on http://(\S+) \(WebSocket: (ws://\S+)\)")
DEV_TOKEN = re.compile(r"development token [^:]*: (\S+)")


def _die_with_parent():
    """Runs in the child before exec: SIGTERM it when this test process dies (Linux), so a killed
    test run leaves no server behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Server:
    """`concord serve --bind 127.0.0.1:0 --data <tmp>`; always stopped by `stop()`."""

    def __init__(self):
        self.binary = os.environ.get("CONCORD_BIN")
        if not self.binary or not os.path.exists(self.binary):
            raise RuntimeError(f"CONCORD_BIN must name the concord binary (got {self.binary!r})")
        self.data = tempfile.mkdtemp(prefix="concord-ffi-server-")
        self.proc = None
        self.url = None
        self.token = None

    def start(self, timeout=30.0):
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--bind", "127.0.0.1:0", "--data", self.data, "--dev"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        lines = queue.Queue()

        def pump():
            with self.proc.stdout:
                for line in self.proc.stdout:
                    lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while self.url is None or self.token is None:
            left = deadline - time.monotonic()
            if self.url is not None:
                left = min(left, 1.0)  # the token line follows at once, if the server prints one
            if left <= 0:
                break
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if m := LISTENING.search(line):
                self.url = m.group(2)
            elif m := DEV_TOKEN.search(line):
                self.token = m.group(1)
        if self.url is None:
            self.stop()
            raise RuntimeError(f"concord serve did not print its address within {timeout}s")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def eventually(check, timeout=15.0, what="condition"):
    """Polls `check()` (sync) until it is truthy; raises AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
