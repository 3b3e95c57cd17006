// End to end: two pages of examples/collab-editor in headless Chromium (Playwright-core, the
// system Chromium) edit one text through a real `concord serve`; one page goes offline for a
// while and keeps typing; after reconnect both pages show the same text, a screenshot is taken,
// and a stock automerge-repo client in Node reads the same document from the server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";
import { Repo } from "@automerge/automerge-repo";
import { BrowserWebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

import { staticServer, testServer, waitFor } from "./support.mjs";

const FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

const text = page => page.$eval("#text", el => el.value);
const status = page => page.$eval("#status", el => el.className.replace("status ", ""));

test("two editors, one offline for a while, converge; automerge-repo sees the same text", async () => {
  const server = testServer();
  const site = await staticServer();
  const profile = await mkdtemp(path.join(tmpdir(), "concord-e2e-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
  let amRepo;
  try {
    const common = `server=${encodeURIComponent(server.url)}&token=${encodeURIComponent(server.token)}`;
    const editor = `${site.base}/examples/collab-editor/index.html?${common}`;
    const one = await browser.newPage();
    const errors = [];
    one.on("pageerror", e => errors.push(e));
    await one.goto(`${editor}&db=one&name=one`);
    await waitFor(() => one.evaluate(() => window.editor?.ready), "page one ready");
    const url = await one.evaluate(() => window.editor.handle.url);
    await waitFor(async () => (await status(one)) === "synced", "page one synced");

    const two = await browser.newPage();
    two.on("pageerror", e => errors.push(e));
    await two.goto(`${editor}&db=two&name=two&doc=${encodeURIComponent(url)}`);
    await waitFor(() => two.evaluate(() => window.editor?.ready), "page two ready");
    await waitFor(async () => (await status(two)) === "synced", "page two synced");

    // Concurrent typing while both are online.
    await one.click("#text");
    await two.click("#text");
    await Promise.all([one.keyboard.type("Hello from one. ", { delay: 15 }), two.keyboard.type("Hi from two. ", { delay: 15 })]);
    await waitFor(async () => (await text(one)) === (await text(two)) && (await text(one)).length === 29, "online convergence");

    // Page two goes offline and keeps typing; page one types too.
    await two.click("#toggle-online");
    await waitFor(async () => (await status(two)) === "offline", "page two offline");
    await two.click("#text"); // the button took the focus
    await two.keyboard.press("Control+End");
    await Promise.all([
      two.keyboard.type("Offline words. ", { delay: 15 }),
      (async () => {
        await one.keyboard.press("Control+End");
        await one.keyboard.type("Online words. ", { delay: 15 });
      })(),
    ]);
    await new Promise(r => setTimeout(r, 1000));
    assert.ok((await text(two)).includes("Offline words."), "page two typed offline");
    assert.ok(!(await text(one)).includes("Offline words."), "no sync while offline");
    assert.ok(!(await text(two)).includes("Online words."), "no sync while offline");

    // Reconnect: both converge on a text holding every fragment.
    await two.click("#toggle-online");
    await waitFor(async () => (await status(two)) === "synced", "page two synced after reconnect");
    const final = await waitFor(async () => {
      const [a, b] = [await text(one), await text(two)];
      return a === b && a.includes("Offline words.") && a.includes("Online words.") ? a : null;
    }, "both pages show the same merged text").catch(async e => {
      const docs = await Promise.all([one, two].map(p => p.evaluate(() => window.editor.handle.get("text"))));
      throw new Error(`${e.message}: pages ${JSON.stringify([await text(one), await text(two)])}, documents ${JSON.stringify(docs)}`);
    });
    for (const fragment of ["Hello from one.", "Hi from two.", "Offline words.", "Online words."]) {
      assert.ok(final.includes(fragment), `${fragment} in ${JSON.stringify(final)}`);
    }

    // Presence: each page lists the other's cursor.
    await waitFor(() => one.$eval("#peers", el => el.textContent.includes("two")), "page one sees two's cursor");

    // A screenshot, checked to be a non-empty PNG.
    const shot = path.join(profile, "editor.png");
    await one.screenshot({ path: shot, fullPage: true });
    const png = await readFile(shot);
    assert.ok(png.length > 2000, `screenshot is ${png.length} bytes`);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    if (process.env.CONCORD_E2E_SCREENSHOT) await import("node:fs").then(fs => fs.copyFileSync(shot, process.env.CONCORD_E2E_SCREENSHOT));

    // A stock automerge-repo client reads the same text from the server.
    amRepo = new Repo({ network: [new BrowserWebSocketClientAdapter(server.syncUrl)] });
    const handle = await waitFor(async () => {
      const h = await amRepo.find(url);
      return h;
    }, "automerge-repo finds the document");
    await waitFor(() => handle.doc()?.text === final, "automerge-repo sees the merged text");
    assert.deepEqual(errors, [], "no page errors");
  } finally {
    await amRepo?.shutdown().catch(() => {});
    await browser.close();
    await site.close();
    await rm(profile, { recursive: true, force: true });
  }
});
