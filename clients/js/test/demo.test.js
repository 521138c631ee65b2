// `pushgate serve --demo`: the page at /demo connects with the SDK, shows a
// push sent with the command it displays, and is saved as a screenshot.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { BIN, ROOT, WAIT, launchBrowser, startGateway } from "./harness.js";

const run = promisify(execFile);
let browser;
let gw;

before(async () => {
  gw = await startGateway(["--demo"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

test("the demo page connects, shows a push sent with its own command, and renders", async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));

  const res = await page.goto(`http://${gw.public}/demo`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-type"], /^text\/html/);
  assert.equal(await page.locator("#state").textContent(), "closed");

  await page.fill("#user", "demo-42");
  await page.fill("#events", "news, alerts");
  await page.click("#connect");
  await page.locator('#state[data-state="connected"]').waitFor({ timeout: WAIT });

  // The command the page shows for this user reaches it.
  const cli = await page.locator("#cmd-cli").textContent();
  assert.match(cli, /^pushgate push --addr http:\/\/127\.0\.0\.1:\d+ --user 'demo-42' --event 'news' 'hello from the demo'$/);
  const curl = await page.locator("#cmd-curl").textContent();
  assert.equal(
    curl,
    `curl -XPOST http://${gw.internal}/v1/push -d '{"user_id":"demo-42","event":"news","message":"hello from the demo"}'`,
  );
  const args = [...cli.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]).slice(1);
  const { stdout } = await run(BIN, args, { timeout: WAIT });
  assert.match(stdout, /delivered=1 seq=1/);
  // And the curl command's body, sent as it says.
  const body = JSON.parse(/-d '(.*)'$/.exec(curl)[1].replace(/'\\''/g, "'"));
  const reply = await fetch(`http://${gw.internal}/v1/push`, {
    method: "POST",
    body: JSON.stringify({ ...body, message: "second push" }),
  });
  assert.equal(reply.status, 200);

  const rows = page.locator("#pushes tr.push");
  await rows.nth(1).waitFor({ timeout: WAIT });
  const cells = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  assert.equal(cells.length, 2);
  assert.deepEqual(cells.map((c) => [c[0], c[1], c[3]]), [
    ["news", "2", "second push"],
    ["news", "1", "hello from the demo"],
  ]);
  assert.match(cells[0][2], /^\d\d:\d\d:\d\d\.\d{3}$/);
  assert.equal(await page.locator("#last-seq").textContent(), "2");
  assert.equal(await page.locator("#count").textContent(), "2");

  const dir = await mkdtemp(path.join(os.tmpdir(), "pushgate-demo-"));
  const file = path.join(dir, "demo.png");
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# demo screenshot: ${file}`);

  await page.click("#disconnect");
  await page.locator('#state[data-state="closed"]').waitFor({ timeout: WAIT });
  assert.deepEqual(errors, []);
});

test("the SDK file is served next to the page, byte for byte", async () => {
  const res = await fetch(`http://${gw.public}/demo/pushgate.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/javascript/);
  assert.equal(await res.text(), await readFile(path.join(ROOT, "pushgate.js"), "utf8"));
});
