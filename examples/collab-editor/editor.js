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

  // The text: local edits become splices; remote changes re-render, keeping the selection.
  let shown = handle.get("text") ?? "";
  area.value = shown;
  area.disabled = false;
  const render = () => {
    const text = handle.get("text") ?? "";
    if (text === shown) return;
    const e = diff(shown, text);
    const [start, end] = [shift(area.selectionStart, e), shift(area.selectionEnd, e)];
    area.value = text;
    shown = text;
    if (document.activeElement === area) area.setSelectionRange(start, end);
    drawCursors();
  };
  area.addEventListener("input", () => {
    const local = diff(shown, area.value);
    // The document may hold remote text not rendered yet: move the edit across it.
    const current = handle.get("text") ?? "";
    const remote = diff(shown, current);
    const pos = current === shown ? local.pos : shift(local.pos, remote);
    shown = area.value;
    handle.spliceText("text", pos, local.del, local.ins).then(render, showError);
    sendPresence();
  });
  handle.on("change", ({ origin }) => {
    if (origin === "remote") render();
  });

  // Presence: cursors of the others, sent on every move and as a heartbeat.
  const peers = new Map();
  const sendPresence = () => {
    try {
      handle.broadcast({ ...me, pos: area.selectionStart });
    } catch (e) {
      if (e.kind !== "closed") showError(e);
    }
  };
  document.addEventListener("selectionchange", () => document.activeElement === area && sendPresence());
  setInterval(sendPresence, 1500);
  handle.on("ephemeral", ({ sessionId, message }) => {
    if (message && typeof message.pos === "number") peers.set(sessionId, { ...message, seen: Date.now() });
    drawCursors();
  });
  const drawCursors = () => {
    const now = Date.now();
    for (const [k, p] of peers) if (now - p.seen > 5000) peers.delete(k);
    const layer = $("cursors");
    layer.replaceChildren();
    const list = $("peers");
    list.replaceChildren();
    const sorted = [...peers.values()].sort((a, b) => a.pos - b.pos);
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
