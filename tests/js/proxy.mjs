// A TCP proxy between JS clients and a server that can hold back what the clients send (to
// reproduce "the creator's first sync has not reached the server yet" deterministically) and
// reports what the server sends them (it reads the server's WebSocket frames, which are never
// masked, and decodes each binary message as automerge-repo CBOR). Bytes pass through unchanged.
//
//   const proxy = await h.proxy(server);           // harness.mjs; closed with the harness
//   const alice = h.client({ syncUrl: proxy.syncUrl(server) });
//   proxy.hold();                                   // alice's frames to the server wait ...
//   await proxy.waitServerSent(m => m.documentId === id, "the server to ask alice");
//   proxy.release();                                // ... and go, in order

import net from "node:net";

import { cbor } from "@automerge/automerge-repo";

/**
 * The server-to-client half of one WebSocket connection: skips the HTTP upgrade response, then
 * reassembles binary messages (opcode 2 and its continuation frames) and passes each payload on.
 */
class ServerFrames {
  constructor(onMessage) {
    this.buf = Buffer.alloc(0);
    this.upgraded = false;
    this.fragments = [];
    this.onMessage = onMessage;
  }

  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    if (!this.upgraded) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      this.buf = this.buf.subarray(end + 4);
      this.upgraded = true;
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0] & 0x80) !== 0;
      const opcode = this.buf[0] & 0x0f;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const payload = this.buf.subarray(off, off + len);
      this.buf = this.buf.subarray(off + len);
      if (opcode === 0x2 || (opcode === 0x0 && this.fragments.length > 0)) {
        this.fragments.push(payload);
        if (fin) {
          const message = Buffer.concat(this.fragments);
          this.fragments = [];
          this.onMessage(message);
        }
      }
    }
  }
}

export class HoldingProxy {
  constructor(listener, target) {
    this.listener = listener;
    this.target = target;
    this.sockets = new Set();
    /** Client-to-server chunks held back, in order: `[upstream socket, bytes]`. */
    this.held = [];
    this.holding = false;
    /** Waiters for server-to-client messages: `{predicate, resolve}`. */
    this.watchers = new Set();
  }

  /** Listens on 127.0.0.1 (a free port) and forwards every connection to `target` ({host, port}). */
  static async start(target) {
    const listener = net.createServer();
    const proxy = new HoldingProxy(listener, target);
    listener.on("connection", client => proxy.#accept(client));
    await new Promise((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(0, "127.0.0.1", resolve);
    });
    return proxy;
  }

  /** The proxy's address as `host:port`. */
  get address() {
    const { address, port } = this.listener.address();
    return `${address}:${port}`;
  }

  /** `server.syncUrl` (with its token) pointing at this proxy instead. */
  syncUrl(server) {
    const url = new URL(server.syncUrl);
    url.host = this.address;
    return url.toString();
  }

  #accept(client) {
    const upstream = net.connect(this.target.port, this.target.host);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const frames = new ServerFrames(bytes => this.#observe(bytes));
    client.on("data", chunk => {
      if (this.holding) this.held.push([upstream, chunk]);
      else upstream.write(chunk);
    });
    upstream.on("data", chunk => {
      client.write(chunk);
      frames.push(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", close);
      s.on("close", close);
    }
  }

  #observe(bytes) {
    let message;
    try {
      message = cbor.decode(new Uint8Array(bytes));
    } catch {
      return; // not automerge-repo CBOR: nothing to report
    }
    for (const w of [...this.watchers]) {
      if (w.predicate(message)) {
        this.watchers.delete(w);
        w.resolve(message);
      }
    }
  }

  /** From now on, bytes the clients send are held back until `release()`. */
  hold() {
    this.holding = true;
  }

  /** Sends everything held, in order, and stops holding. */
  release() {
    this.holding = false;
    for (const [upstream, chunk] of this.held.splice(0)) {
      if (!upstream.destroyed) upstream.write(chunk);
    }
  }

  /**
   * Resolves with the first message the server sends a client (from now on) that satisfies
   * `predicate`; rejects after `ms`.
   */
  waitServerSent(predicate, label, ms = 20_000) {
    let watcher;
    let timer;
    return new Promise((resolve, reject) => {
      watcher = { predicate, resolve };
      this.watchers.add(watcher);
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
    }).finally(() => {
      clearTimeout(timer);
      this.watchers.delete(watcher);
    });
  }

  /** Closes the listener and every connection. */
  async close() {
    this.release();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise(resolve => this.listener.close(() => resolve()));
  }
}
