// The SDK in real headless Chromium against the real pushgate binary.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { launchBrowser, openPage, startGateway, startProxy, startStatic, waitIn, within } from "./harness.js";

const FAST = { minReconnectDelay: 50, maxReconnectDelay: 400 };

let browser;
let web;
const cleanups = [];

before(async () => {
  browser = await launchBrowser();
  web = await startStatic({ jwtSecret: "test-secret" });
});

after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
  await browser?.close();
  await web?.close();
});

async function gateway(args) {
  const gw = await startGateway(args);
  cleanups.push(() => gw.stop());
  return gw;
}

async function proxyTo(addr) {
  const proxy = await startProxy(addr);
  cleanups.push(() => proxy.close());
  return proxy;
}

async function page() {
  const p = await openPage(browser, web);
  cleanups.push(() => p.close());
  return p;
}

/** Makes a client in the page and connects it; returns its index. */
async function client(p, url, options) {
  const i = await p.evaluate(([url, options]) => harness.make(url, options), [url, options]);
  await p.evaluate((i) => harness.clients[i].client.connect(), i);
  return i;
}

const record = (p, i) => p.evaluate((i) => harness.record(i), i);
const waitConnected = (p, i, n = 1) =>
  waitIn(p, `client ${i} connected ${n} time(s)`, ([i, n]) => harness.count(i, "connected") >= n, [i, n]);
const waitPushes = (p, i, n) =>
  waitIn(p, `${n} pushes on client ${i}`, ([i, n]) => harness.clients[i].pushes.length >= n, [i, n]);

describe("pushes", () => {
  test("text, binary and broadcast pushes arrive; only seq'd ones move lastSeq", async () => {
    const gw = await gateway();
    const p = await page();
    const c = await client(p, gw.wsUrl(), { token: "alice", events: ["news"], ...FAST });
    await waitConnected(p, c);
    assert.equal((await record(p, c)).state, "connected");

    const text = "héllo ✓ \"quoted\"";
    const r1 = await gw.push("alice", "news", text);
    assert.equal(r1.delivered, 1);
    const bytes = [0, 1, 2, 127, 128, 254, 255, 0x7b, 0x22];
    const r2 = await gw.pushBytes("alice", "news", bytes);
    await gw.broadcast("news", "to everyone");
    await waitPushes(p, c, 3);

    const rec = await record(p, c);
    assert.deepEqual(
      rec.pushes.map(({ event, seq, binary, data }) => ({ event, seq, binary, data })),
      [
        { event: "news", seq: r1.seq, binary: false, data: text },
        { event: "news", seq: r2.seq, binary: true, data: bytes },
        { event: "news", seq: null, binary: false, data: "to everyone" },
      ],
    );
    assert.ok(rec.pushes.every((x) => Math.abs(x.ts - Date.now()) < 60_000), "ts is a recent epoch in ms");
    assert.equal(rec.lastSeq, r2.seq, "the broadcast does not move lastSeq");
    assert.deepEqual(p.pageErrors, []);
  });

  test("subscriptions made after connect survive a reconnect; unsubscribed events stop", async () => {
    const gw = await gateway();
    const proxy = await proxyTo(gw.public);
    const p = await page();
    const c = await client(p, gw.wsUrl(proxy.addr), { token: "bob", events: ["a"], ...FAST });
    await waitConnected(p, c);
    await p.evaluate((i) => harness.clients[i].client.subscribe(["b"]), c);
    await waitIn(p, "the gateway to confirm b", (i) => harness.clients[i].subscriptions.some((e) => e.includes("b")), c);
    await gw.push("bob", "b", "b1");
    await waitPushes(p, c, 1);

    // b2 is pushed while the network is down: only a resume that includes b
    // (the register after the reconnect) brings it.
    proxy.blocked = true;
    proxy.cut();
    await waitIn(p, "the drop", (i) => harness.clients[i].client.state !== "connected", c);
    await gw.push("bob", "b", "b2");
    proxy.blocked = false;
    await waitConnected(p, c, 2);
    await waitPushes(p, c, 2);

    await p.evaluate((i) => harness.clients[i].client.unsubscribe(["a"]), c);
    await waitIn(p, "the gateway to confirm a is gone", (i) => {
      const last = harness.clients[i].subscriptions.at(-1);
      return last && !last.includes("a") && last.includes("b");
    }, c);
    const gone = await gw.push("bob", "a", "a-after-unsubscribe");
    assert.equal(gone.delivered, 0);
    await gw.push("bob", "b", "b3");
    await waitPushes(p, c, 3);
    const rec = await record(p, c);
    assert.deepEqual(rec.pushes.map((x) => x.data), ["b1", "b2", "b3"]);
    assert.deepEqual(rec.subscriptions.at(-1), ["b"]);
  });
});

describe("reconnect", () => {
  test("network cuts while pushes continue: reconnect, resume with since, nothing lost or doubled", async () => {
    const gw = await gateway();
    const proxy = await proxyTo(gw.public);
    const p = await page();
    const c = await client(p, gw.wsUrl(proxy.addr), { token: "carol", events: ["feed"], ...FAST });
    await waitConnected(p, c);

    const N = 120;
    // push index -> how many times the client must have connected before that cut
    const cuts = new Map([[20, 1], [55, 2], [90, 3]]);
    const sent = [];
    for (let i = 0; i < N; i++) {
      if (cuts.has(i)) {
        await waitConnected(p, c, cuts.get(i));
        proxy.cut();
      }
      const r = await gw.push("carol", "feed", `m${i}`);
      sent.push(r.seq);
      await new Promise((resolve) => setTimeout(resolve, 5)); // pacing: pushes keep coming during the cuts
    }
    await waitIn(p, "the last push", ([i, seq]) => harness.clients[i].client.lastSeq >= seq, [c, sent.at(-1)]);

    const rec = await record(p, c);
    assert.deepEqual(rec.pushes.map((x) => x.data), sent.map((_, i) => `m${i}`), "every push once, in order");
    assert.deepEqual(rec.pushes.map((x) => x.seq), sent);
    const drops = rec.states.filter((s) => s.state === "disconnected");
    assert.equal(drops.length, 3, `three drops: ${JSON.stringify(rec.states)}`);
    assert.ok(drops.every((d) => d.code === 1006), "a cut is seen as 1006");
    // Each reconnect resumed from the lastSeq it had when the connection dropped.
    assert.equal(rec.recovered.length, 3);
    assert.deepEqual(rec.recovered.map((r) => r.from), drops.map((d) => d.lastSeq));
    assert.ok(rec.recovered.every((r) => r.complete));
    assert.ok(rec.pushes.some((x, i) => i > 0 && rec.recovered.some((r) => x.seq > r.from && x.seq <= r.to)), "some pushes came from the replay");
    assert.ok(proxy.accepted >= 4);
  });

  test("close 4502 (disconnected by the API): no reconnect, state closed", async () => {
    const gw = await gateway();
    const proxy = await proxyTo(gw.public);
    const p = await page();
    const c = await client(p, gw.wsUrl(proxy.addr), { token: "dave", events: ["x"], ...FAST });
    await waitConnected(p, c);
    const accepted = proxy.accepted;
    assert.equal((await gw.disconnect("dave")).closed, 1);
    await waitIn(p, "state closed", (i) => harness.clients[i].client.state === "closed", c);
    // Give a wrongly reconnecting client several times its largest backoff to try.
    await new Promise((resolve) => setTimeout(resolve, 5 * FAST.maxReconnectDelay));
    const rec = await record(p, c);
    assert.equal(rec.state, "closed");
    assert.deepEqual(rec.states.map((s) => s.state), ["connecting", "connected", "closed"]);
    assert.equal(rec.states.at(-1).code, 4502);
    assert.equal(proxy.accepted, accepted, "no new connection");
    assert.equal(await gw.online("dave"), 0);
  });

  test("the server's reconnect_after_ms hint on shutdown (1001) is waited for", async () => {
    const old = await gateway(["--drain-timeout", "4s"]);
    const proxy = await proxyTo(old.public);
    const p = await page();
    const users = ["h0", "h1", "h2"];
    const cs = [];
    for (const user of users) cs.push(await client(p, old.wsUrl(proxy.addr), { token: user, events: ["e"], ...FAST }));
    for (const c of cs) await waitConnected(p, c);
    // Each has seen seq 1 and 2 of the old gateway's streams.
    for (const [i, user] of users.entries()) {
      await old.push(user, "e", "before the move");
      await old.push(user, "e", "before the move, again");
      await waitPushes(p, cs[i], 2);
    }

    const next = await gateway();
    proxy.target = next.public;
    const exit = await old.terminate();
    assert.equal(exit.code, 0, `the old gateway exits cleanly: ${old.stderr()}`);
    for (const c of cs) await waitConnected(p, c, 2);

    const hints = [];
    for (const c of cs) {
      const rec = await record(p, c);
      const drop = rec.states.find((s) => s.state === "disconnected");
      assert.equal(drop.code, 1001);
      const m = /reconnect_after_ms=(\d+)/.exec(drop.reason);
      assert.ok(m, `a hint in ${JSON.stringify(drop.reason)}`);
      const hint = Number(m[1]);
      hints.push(hint);
      const retry = rec.states.find((s) => s.state === "connecting" && s.at > drop.at);
      const waited = retry.at - drop.at;
      assert.ok(waited >= hint - 1, `${users[cs.indexOf(c)]}: waited ${waited} ms, hint ${hint} ms`);
      assert.equal(drop.delay, hint);
      // It resumed (registered with since) on the new gateway.
      assert.equal(rec.recovered.length, 1);
    }
    assert.ok(Math.max(...hints) >= 900, `a hint long enough to tell from the backoff: ${hints}`);
    // The new gateway's stream starts over under a new epoch: its seq 1 is
    // news, not a repeat of the old stream's seq 1.
    const r = await next.push("h1", "e", "after the move");
    assert.deepEqual([r.delivered, r.seq], [1, 1]);
    await waitPushes(p, cs[1], 3);
    const moved = await record(p, cs[1]);
    assert.deepEqual(moved.pushes.map((x) => x.data), ["before the move", "before the move, again", "after the move"]);
    assert.equal(moved.recovered[0].complete, false, "the old epoch's seq says nothing about the new stream");
    assert.equal(moved.lastSeq, 1);
  });
});

describe("tokens", () => {
  const JWT = ["--auth", "jwt", "--jwt-secret", "test-secret"];
  const tokenUrl = (user, ttl) => `/token?user=${user}&ttl=${ttl}`;

  test("getToken: refreshed before expiry, the connection stays up past several expiries", async () => {
    const gw = await gateway(JWT);
    const p = await page();
    const issued = web.state.tokensIssued;
    const c = await client(p, gw.wsUrl(), { tokenUrl: tokenUrl("erin", 2), events: ["e"], ...FAST });
    await waitConnected(p, c);
    const started = Date.now();
    // Three token lifetimes; without refresh the gateway closes with 4002 after at most 2 s.
    await within(
      (async () => {
        while (Date.now() - started < 5_000) {
          await gw.push("erin", "e", `at ${Date.now() - started}`);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      })(),
      "pushing for 5 s",
    );
    const r = await gw.push("erin", "e", "last");
    await waitIn(p, "the last push", ([i, seq]) => harness.clients[i].client.lastSeq >= seq, [c, r.seq]);
    const rec = await record(p, c);
    assert.deepEqual(rec.states.map((s) => s.state), ["connecting", "connected"], "never dropped");
    assert.ok(web.state.tokensIssued - issued >= 4, `tokens fetched: ${web.state.tokensIssued - issued}`);
    assert.deepEqual(rec.errors, []);
  });

  test("close 4002: a fresh token is fetched (after getToken failures back off) and the client resumes", async () => {
    const gw = await gateway(JWT);
    const p = await page();
    const c = await client(p, gw.wsUrl(), { tokenUrl: tokenUrl("frank", 2), events: ["e"], ...FAST });
    await waitConnected(p, c);
    await gw.push("frank", "e", "before");
    web.state.failTokens = true;
    try {
      await waitIn(p, "close 4002", (i) => harness.clients[i].states.some((s) => s.code === 4002), c);
      // Pushed while the client has no valid token: it must come with the resume.
      await gw.push("frank", "e", "while expired");
      await waitIn(p, "a reconnect attempt failing in getToken", (i) => {
        const drops = harness.clients[i].states.filter((s) => s.state === "disconnected");
        return drops.length >= 2;
      }, c);
    } finally {
      web.state.failTokens = false;
    }
    await waitConnected(p, c, 2);
    await gw.push("frank", "e", "after");
    await waitPushes(p, c, 3);
    const rec = await record(p, c);
    assert.deepEqual(rec.pushes.map((x) => x.data), ["before", "while expired", "after"]);
    assert.ok(rec.errors.every((e) => e.code === "token_unavailable"), JSON.stringify(rec.errors));
    const drop = rec.states.find((s) => s.code === 4002);
    assert.equal(drop.state, "disconnected");
    // Failed getToken calls were retried with growing delays, not in a tight loop.
    const delays = rec.states.filter((s) => s.state === "disconnected").map((s) => s.delay);
    assert.ok(delays.length >= 2 && delays.every((d) => d >= FAST.minReconnectDelay), JSON.stringify(delays));
    assert.ok(web.state.tokensRefused < 40, `refused token requests: ${web.state.tokensRefused}`);
    assert.equal(rec.recovered.length, 1);
    assert.ok(rec.recovered[0].complete);
  });

  test("close 4002 with an opaque token (expiry known only to the gateway): a fresh token, then resume", async () => {
    const gw = await gateway(["--auth", `webhook=${web.url}/auth`, "--auth-cache-ttl", "1s"]);
    const p = await page();
    const url = "/opaque-token?user=grace&ttl=2&then=60";
    const c = await client(p, gw.wsUrl(), { tokenUrl: url, events: ["e"], ...FAST });
    await waitConnected(p, c);
    await gw.push("grace", "e", "first");
    await waitIn(p, "close 4002", (i) => harness.clients[i].states.some((s) => s.code === 4002), c);
    await gw.push("grace", "e", "while away");
    await waitConnected(p, c, 2);
    await gw.push("grace", "e", "after");
    await waitPushes(p, c, 3);
    const rec = await record(p, c);
    assert.deepEqual(rec.pushes.map((x) => x.data), ["first", "while away", "after"]);
    const drops = rec.states.filter((s) => s.state === "disconnected");
    assert.equal(drops.length, 1, `one 4002, then connected with a fresh token: ${JSON.stringify(rec.states)}`);
    assert.deepEqual(rec.errors, []);
  });
});
