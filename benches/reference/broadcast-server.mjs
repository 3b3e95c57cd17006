// The floor: a bare WebSocket broadcast server. Every binary message is relayed as is to every
// other connection on the same path (one path per document). No parsing, no storage.
// Usage: node broadcast-server.mjs PORT
import { WebSocketServer } from "ws";

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]) });
const rooms = new Map();
wss.on("connection", (ws, req) => {
  const room = rooms.get(req.url) ?? new Set();
  rooms.set(req.url, room);
  room.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const peer of room) if (peer !== ws) peer.send(data, { binary: isBinary });
  });
  ws.on("close", () => room.delete(ws));
});
wss.on("listening", () => console.log(`listening on ws://127.0.0.1:${wss.address().port}`));
process.on("SIGTERM", () => process.exit(0));
