// The reference sync server: stock automerge-repo 2.5.6 in Node, as its README sets it up
// (ws bound to 127.0.0.1 + NodeWSServerAdapter + NodeFSStorageAdapter).
// Usage: node automerge-repo-server.mjs PORT DATA_DIR
import { WebSocketServer } from "ws";
import { Repo } from "@automerge/automerge-repo";
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";

const [port, dir] = process.argv.slice(2);
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(port) });
new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `reference-server-${process.pid}`,
  sharePolicy: async () => false,
});
wss.on("listening", () => console.log(`listening on ws://127.0.0.1:${wss.address().port}`));
process.on("SIGTERM", () => process.exit(0));
