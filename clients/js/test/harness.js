// Test harness: the real pushgate binary on 127.0.0.1, a static server for
// the SDK and the test page, a TCP proxy that can cut connections, and
// headless Chromium driven by playwright-core. Everything waits on events
// with timeouts; nothing sleeps for readiness.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "..");

/** How long any one wait may take before the test fails. */
export const WAIT = 15_000;

export const BIN = process.env.PUSHGATE_BIN || path.resolve(ROOT, "../../target/debug/pushgate");
export const CHROMIUM = process.env.PUSHGATE_CHROMIUM || "/usr/bin/chromium";

/** Resolves `promise`, or rejects after `ms` naming `what`. */
export function within(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ gateway

/**
 * Starts `pushgate serve` on 127.0.0.1 port 0 for both listeners and waits
 * for its "pushgate listening" log line, which names the bound addresses.
 */
export async function startGateway(args = []) {
  const child = spawn(
    BIN,
    ["serve", "--public-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--log-format", "json", ...args],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "" } },
  );
  let stderr = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    let buffered = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (entry.fields?.message === "pushgate listening") resolve(entry.fields);
      }
    });
    child.once("error", reject);
    exited.then(({ code, signal }) => reject(new Error(`pushgate exited (${code ?? signal}) before listening:\n${stderr}`)));
  });
  const fields = await within(listening, "the gateway's listening line");
  const gw = {
    child,
    exited,
    public: fields.public_addr,
    internal: fields.internal_addr,
    stderr: () => stderr,
    wsUrl: (via) => `ws://${via ?? fields.public_addr}/ws`,
    async api(route, body) {
      const res = await fetch(`http://${fields.internal_addr}${route}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${route} -> ${res.status} ${text}`);
      return JSON.parse(text);
    },
    // The replies are in the proto3 JSON mapping: a uint64 is a string, and a
    // zero is left out.
    push: (user, event, message) => gw.api("/v1/push", { user_id: user, event, message }).then(pushReply),
    pushBytes: (user, event, bytes) =>
      gw.api("/v1/push", { user_id: user, event, data: Buffer.from(bytes).toString("base64") }).then(pushReply),
    broadcast: (event, message) => gw.api("/v1/broadcast", { event, message }).then((r) => ({ delivered: r.delivered ?? 0 })),
    disconnect: (user) => gw.api("/v1/disconnect", { user_id: user }).then((r) => ({ closed: r.closed ?? 0 })),
    async online(user) {
      const reply = await gw.api("/v1/online", { user_ids: [user] });
      return reply.connections?.[user] ?? 0;
    },
    /** SIGTERM: the graceful shutdown. */
    terminate() {
      child.kill("SIGTERM");
      return within(exited, "the gateway to exit");
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  return gw;
}

const pushReply = (r) => ({ delivered: r.delivered ?? 0, seq: Number(r.seq ?? 0), duplicate: r.duplicate ?? false });

// ----------------------------------------------------------------- tokens

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT for `sub` that expires `ttlSeconds` from now. */
export function mintJwt(secret, sub, ttlSeconds) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const sig = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${sig}`;
}

// ----------------------------------------------------------- static server

/**
 * Serves the SDK (`/pushgate.js`), the test page (`/page.html`), JWTs
 * (`/token?user=U&ttl=S`, minted with `jwtSecret`; 503 while `failTokens`),
 * opaque tokens (`/opaque-token?user=U&ttl=S&then=S2`: S for the user's
 * first token, S2 for the later ones) and the `--auth webhook`
 * answering for them (`POST /auth`).
 */
export async function startStatic({ jwtSecret } = {}) {
  const files = {
    "/pushgate.js": ["text/javascript", await readFile(path.join(ROOT, "pushgate.js"))],
    "/page.html": ["text/html", await readFile(path.join(here, "page.html"))],
  };
  const state = { failTokens: false, tokensIssued: 0, tokensRefused: 0 };
  const opaque = new Map(); // opaque token -> {user_id, expires_at}
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/auth" && req.method === "POST") {
      // The gateway's --auth webhook: answers for the opaque tokens below.
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const known = opaque.get(JSON.parse(body).token);
        if (!known) res.writeHead(401).end();
        else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(known));
      });
      return;
    }
    if (url.pathname === "/opaque-token") {
      // A token that says nothing of its expiry: only the webhook knows it.
      state.tokensIssued++;
      const token = `opaque-${state.tokensIssued}-${Math.random().toString(36).slice(2)}`;
      const user = url.searchParams.get("user");
      const first = ![...opaque.values()].some((v) => v.user_id === user);
      const ttl = Number((first ? url.searchParams.get("ttl") : url.searchParams.get("then")) || 60);
      opaque.set(token, { user_id: user, expires_at: Math.floor(Date.now() / 1000) + ttl });
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" }).end(token);
      return;
    }
    if (url.pathname === "/token") {
      if (state.failTokens || !jwtSecret) {
        state.tokensRefused++;
        res.writeHead(503).end("no tokens now");
        return;
      }
      state.tokensIssued++;
      const token = mintJwt(jwtSecret, url.searchParams.get("user"), Number(url.searchParams.get("ttl") || 60));
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" }).end(token);
      return;
    }
    if (url.pathname === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    const file = files[url.pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    state,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

// --------------------------------------------------------------- TCP proxy

/**
 * A TCP proxy on 127.0.0.1 to `target` ("host:port"). `cut()` destroys every
 * connection through it, as a network failure would; `target` may be
 * changed for later connections.
 */
export async function startProxy(target) {
  const sockets = new Set();
  const proxy = {
    target,
    accepted: 0,
    /** While true, new connections are reset at once (the network is down). */
    blocked: false,
    cut() {
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
    },
  };
  const server = net.createServer((client) => {
    if (proxy.blocked) {
      client.on("error", () => {});
      client.resetAndDestroy();
      return;
    }
    proxy.accepted++;
    const [host, port] = proxy.target.split(":");
    const upstream = net.connect(Number(port), host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.addr = `127.0.0.1:${server.address().port}`;
  proxy.close = () => new Promise((resolve) => { proxy.cut(); server.close(resolve); });
  return proxy;
}

// ------------------------------------------------------------------ browser

/** Headless Chromium (Debian's), as root. */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * Opens the test page. The page's `window.harness` makes SDK clients and
 * records what each one sees (see page.html).
 */
export async function openPage(browser, staticServer) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => { if (m.type() === "error") errors.push(new Error(m.text())); });
  await page.goto(`${staticServer.url}/page.html`);
  await page.waitForFunction(() => window.harness !== undefined, null, { timeout: WAIT });
  page.pageErrors = errors;
  return page;
}

/** Waits until `fn(arg)` is truthy in the page; fails naming `what`. */
export async function waitIn(page, what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 20 })).jsonValue();
  } catch (error) {
    throw new Error(`timed out waiting for ${what}: ${error.message.split("\n")[0]}`);
  }
}
