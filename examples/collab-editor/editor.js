// A collaborative plain-text editor on Concord's browser package.
//
// URL parameters: server (ws:// URL; repeat it for failover), token (from `concord token create`),
// doc (an automerge: URL; a new document is created without it), db (IndexedDB name, default
// "concord-editor"), name (shown next to your cursor). The text lives at the path "text".
import init, { Repo } from "../../wasm/pkg/web/concord_wasm.js";

const params = new URLSearchParams(location.search);
const $ = id => document.getElementById(id);
const area = $("text");
const COLORS = ["#d33", "#27c", "#2a7", "#a3c", "#c80", "#099"];
const me = {
  name: params.get("name") || `guest-${Math.floor(Math.random() * 1000)}`,
  color: COLORS[Math.floor(Math.random() * COLORS.length)],
};

/** The edit turning `a` into `b`: `{pos, del, ins}` (common prefix and suffix kept). */
function diff(a, b) {
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  return { pos: p, del: a.length - p - s, ins: b.slice(p, b.length - s) };
}

/** Moves position `i` across edit `e` (positions after the edit shift by its length change). */
function shift(i, e) {
  if (i <= e.pos) return i;
  if (i >= e.pos + e.del) return i + e.ins.length - e.del;
  return e.pos + e.ins.length;
}

function showError(e) {
  const el = $("error");
  el.hidden = false;
  el.textContent = `${e.kind ?? "error"}: ${e.message}`;
  console.error(e);
}

async function main() {
  await init();
  const servers = params.getAll("server");
  const repo = await Repo.open({
    database: params.get("db") || "concord-editor",
    servers,
    token: params.get("token") ?? undefined,
    connectWaitMs: 3000,
  });
  const docUrl = params.get("doc");
  const handle = docUrl ? await repo.find(docUrl) : await repo.create({ text: "" });
  if (!docUrl) {
    params.set("doc", handle.url);
    history.replaceState(null, "", `?${params}`);
  }
  const link = $("url");
  link.textContent = handle.url;
  const share = new URLSearchParams(params);
  share.delete("db");
  share.delete("name");
  link.href = `?${share}`;

  // Connection indicator and the offline switch.
  let online = true;
  const status = $("status");
  const showStatus = s => {
    status.className = `status ${s}`;
    status.textContent = online ? s : "offline (paused)";
  };
  showStatus(servers.length ? repo.status : "offline");
  repo.on("status", ({ status: s }) => showStatus(s));
  repo.on("error", showError);
  $("toggle-online").addEventListener("click", () => {
    online = !online;
    repo.setOnline(online);
    $("toggle-online").textContent = online ? "Go offline" : "Go online";
    showStatus(repo.status);
  });

  // The text: local edits become splices (applied at once); remote changes re-render, and the
  // selection follows stable Automerge cursors taken at the heads of what was shown.
  let shown = handle.get("text") ?? "";
  let shownHeads = handle.heads();
  area.value = shown;
  area.disabled = false;
  // A caret sticks to the character on its left (so two people typing at the same place do
  // not interleave): follow that character's cursor.
  const moved = (i, heads) => (i === 0 ? 0 : handle.cursorPosition("text", handle.cursor("text", i - 1, heads)) + 1);
  const render = () => {
    const text = handle.get("text") ?? "";
    if (text !== shown) {
      const [start, end] = [moved(area.selectionStart, shownHeads), moved(area.selectionEnd, shownHeads)];
      area.value = text;
      if (document.activeElement === area) area.setSelectionRange(start, end);
    }
    shown = text;
    shownHeads = handle.heads();
    drawCursors();
  };
  area.addEventListener("input", () => {
    const local = diff(shown, area.value);
    const caret = area.selectionStart - local.pos;
    // The document may hold remote text not rendered yet: move the edit across it.
    const pos = moved(local.pos, shownHeads);
    handle.spliceText("text", pos, local.del, local.ins).catch(showError);
    const text = handle.get("text") ?? "";
    if (text !== area.value) {
      area.value = text;
      area.setSelectionRange(pos + caret, pos + caret);
    }
    shown = text;
    shownHeads = handle.heads();
    sendPresence();
  });
  handle.on("change", ({ origin }) => {
    if (origin === "remote") render();
  });

  // Presence: cursors of the others, sent on every move and as a heartbeat.
  const peers = new Map();
  const sendPresence = () => {
    try {
      const caret = area.selectionStart;
      handle.broadcast({ ...me, cursor: caret === 0 ? "start" : handle.cursor("text", caret - 1, shownHeads) });
    } catch (e) {
      if (e.kind !== "closed") showError(e);
    }
  };
  document.addEventListener("selectionchange", () => document.activeElement === area && sendPresence());
  setInterval(sendPresence, 1500);
  handle.on("ephemeral", ({ sessionId, message }) => {
    if (message && typeof message.cursor === "string") peers.set(sessionId, { ...message, seen: Date.now() });
    drawCursors();
  });
  const drawCursors = () => {
    const now = Date.now();
    for (const [k, p] of peers) if (now - p.seen > 5000) peers.delete(k);
    const layer = $("cursors");
    layer.replaceChildren();
    const list = $("peers");
    list.replaceChildren();
    const placed = [];
    for (const p of peers.values()) {
      try {
        placed.push({ ...p, pos: p.cursor === "start" ? 0 : handle.cursorPosition("text", p.cursor) + 1 });
      } catch {
        // The cursor points at text this replica has not received yet.
      }
    }
    const sorted = placed.sort((a, b) => a.pos - b.pos);
    let at = 0;
    for (const p of sorted) {
      const pos = Math.min(p.pos, shown.length);
      layer.append(document.createTextNode(shown.slice(at, pos)));
      const caret = document.createElement("span");
      caret.className = "caret";
      caret.style.borderColor = p.color;
      const label = document.createElement("span");
      label.textContent = p.name;
      label.style.background = p.color;
      caret.append(label);
      layer.append(caret);
      at = pos;
      const li = document.createElement("li");
      li.textContent = p.name;
      li.style.background = p.color;
      list.append(li);
    }
    layer.append(document.createTextNode(shown.slice(at)));
  };
  setInterval(drawCursors, 1000);

  window.editor = { repo, handle, ready: true };
}

main().catch(showError);
