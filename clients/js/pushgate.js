// pushgate browser client: one ES module, no dependencies, no build step.
//
// It speaks the gateway's envelope mode (sub-protocol "pushgate.v1"):
// registers with a token and events, resumes with `since` after every
// reconnect, reconnects with exponential backoff and full jitter (or after the
// server's `reconnect_after_ms` hint), stops on the close codes that forbid
// reconnecting, and refreshes JWTs before they expire when given `getToken`.

/** The sub-protocol that selects the envelope mode. */
export const PROTOCOL = "pushgate.v1";

const DEFAULTS = {
  minReconnectDelay: 500,
  maxReconnectDelay: 30_000,
  connectTimeout: 10_000,
  pingInterval: 25_000,
  pongTimeout: 10_000,
  refreshMargin: 30_000,
};

// ------------------------------------------------------------ pure helpers

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * drop): uniformly random ("full jitter") between `min` and
 * min(`max`, `min` * 2^(attempt+1)).
 */
export function reconnectDelay(attempt, min = DEFAULTS.minReconnectDelay, max = DEFAULTS.maxReconnectDelay, random = Math.random) {
  const lo = Math.max(0, min);
  const hi = Math.max(lo, max);
  const n = Math.min(Math.max(0, Math.floor(attempt) || 0), 30);
  const cap = Math.min(hi, Math.max(lo, 1) * 2 ** (n + 1));
  return Math.round(lo + random() * Math.max(0, cap - lo));
}

/**
 * What a close code asks of the client: "reconnect", "token" (4002: get a
 * fresh token, then reconnect) or "stop". 4500–4999, 1003, 1008 and 1009
 * stop; everything else (4000–4499, 1001, 1006, 1011, ...) reconnects.
 */
export function closeAction(code) {
  if (code === 4002) return "token";
  if ((code >= 4500 && code <= 4999) || code === 1003 || code === 1008 || code === 1009) return "stop";
  return "reconnect";
}

/** The `reconnect_after_ms=N` hint of a close reason, or null. */
export function reconnectHint(reason) {
  const m = /(?:^|[\s;,])reconnect_after_ms=(\d+)/.exec(String(reason ?? ""));
  return m ? Number(m[1]) : null;
}

/**
 * Decodes a binary push frame: a 2-byte big-endian header length N, N bytes
 * of JSON header {event, seq?, ts}, then the payload.
 * @returns {{event: string, seq: number|null, ts: number, data: Uint8Array}}
 */
export function decodeBinaryPush(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  if (bytes.length < 2) throw new Error("binary push shorter than its header length");
  const n = (bytes[0] << 8) | bytes[1];
  if (bytes.length < 2 + n) throw new Error("binary push shorter than its header");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(2, 2 + n)));
  return { event: header.event, seq: header.seq ?? null, ts: header.ts, data: bytes.slice(2 + n) };
}

/** A JWT's `exp` in milliseconds since the epoch, read without verifying it; null when there is none. */
export function tokenExpiry(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims.exp === "number" && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * How long to wait before refreshing a token that expires at `expiresAt`
 * (ms): `margin` before the expiry, but never later than half-way through
 * what is left.
 */
export function refreshDelay(expiresAt, now = Date.now(), margin = DEFAULTS.refreshMargin) {
  const left = expiresAt - now;
  if (!(left > 0)) return 0;
  return Math.max(0, left - Math.min(Math.max(0, margin), left / 2));
}

function reportListenerError(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

// ------------------------------------------------------------------ client

/**
 * A connection to the gateway that stays up: see pushgate.d.ts for the API.
 */
export class PushgateClient {
  /**
   * @param {string} url  ws:// or wss:// URL of the gateway's WebSocket path
   * @param {object} [options]
   */
  constructor(url, options = {}) {
    if (!url) throw new TypeError("PushgateClient: a ws:// or wss:// URL is required");
    if (options.token == null && typeof options.getToken !== "function") {
      throw new TypeError("PushgateClient: give `token` or `getToken`");
    }
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this._events = new Set(options.events ?? []);
    this._listeners = new Map();
    this._state = "closed";
    this._lastSeq = Number.isInteger(options.since) && options.since >= 0 ? options.since : 0;
    this._resume = Number.isInteger(options.since) && options.since >= 0;
    this._epoch = typeof options.epoch === "string" ? options.epoch : null;
    this._token = options.token ?? null;
    this._tokenFetched = false;
    this._ws = null;
    this._registered = false;
    this._attempt = 0;
    this._timers = {};
    this._generation = 0;
  }

  /** The seq to resume from: the highest seq received (0 before any). */
  get lastSeq() { return this._lastSeq; }

  /** The epoch of the stream lastSeq belongs to (from the server's `registered`); null before any. */
  get epoch() { return this._epoch; }

  /** "connecting" | "connected" | "disconnected" | "closed". */
  get state() { return this._state; }

  /** The events this client wants (those given, plus subscribed, minus unsubscribed). */
  get events() { return [...this._events]; }

  /** Adds a listener; returns a function that removes it. */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /** Removes a listener. */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /** Starts connecting (and reconnecting until close()). */
  connect() {
    if (this._state !== "closed") return;
    this._attempt = 0;
    this._open();
  }

  /** Adds events; sent now when connected, and kept across reconnects. */
  subscribe(events) {
    const added = [...new Set(events)].filter((e) => !this._events.has(e));
    added.forEach((e) => this._events.add(e));
    if (added.length && this._registered) this._send({ type: "subscribe", events: added });
  }

  /** Removes events; sent now when connected, and kept across reconnects. */
  unsubscribe(events) {
    const removed = [...new Set(events)].filter((e) => this._events.has(e));
    removed.forEach((e) => this._events.delete(e));
    if (removed.length && this._registered) this._send({ type: "unsubscribe", events: removed });
  }

  /** Closes the connection for good (until connect() is called again). */
  close() {
    this._generation++;
    this._clearTimers();
    const ws = this._ws;
    this._detach();
    if (ws && ws.readyState <= 1) ws.close(1000, "client closed");
    this._setState("closed", { code: 1000, reason: "client closed" });
  }

  // ---------------------------------------------------------------- internal

  _emit(type, ...args) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }

  _setState(state, info = {}) {
    if (this._state === state && state !== "disconnected") return;
    this._state = state;
    this._emit("state", state, info);
  }

  _timer(name, ms, fn) {
    clearTimeout(this._timers[name]);
    this._timers[name] = setTimeout(fn, ms);
  }

  _clearTimers(...names) {
    for (const name of names.length ? names : Object.keys(this._timers)) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  _send(message) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(message));
  }

  /** A token for the next connection: the given one, or a fresh one from getToken. */
  async _currentToken() {
    const { getToken, refreshMargin } = this.options;
    if (typeof getToken !== "function") return this._token;
    const exp = tokenExpiry(this._token);
    const fresh = this._token != null && this._tokenFetched && (exp == null || exp - Date.now() > Math.min(refreshMargin, 1000));
    if (!fresh) {
      this._token = await getToken();
      this._tokenFetched = true;
    }
    return this._token;
  }

  async _open() {
    const generation = ++this._generation;
    this._clearTimers();
    this._setState("connecting");
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      if (generation !== this._generation) return;
      this._emit("error", { code: "token_unavailable", message: String(error?.message ?? error) });
      this._retry({ code: 0, reason: "getToken failed" });
      return;
    }
    if (generation !== this._generation) return;
    let ws;
    try {
      ws = new WebSocket(this.url, [PROTOCOL]);
    } catch (error) {
      this._emit("error", { code: "bad_url", message: String(error?.message ?? error) });
      this._setState("closed", { code: 0, reason: "bad url" });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._registered = false;
    this._timer("connect", this.options.connectTimeout, () => this._abandon("connect timeout"));
    ws.onopen = () => {
      if (ws.protocol !== PROTOCOL) {
        this._emit("error", { code: "protocol", message: `the server did not accept the ${PROTOCOL} sub-protocol` });
        this._detach();
        ws.close(1000);
        this._setState("closed", { code: 0, reason: "no envelope mode" });
        return;
      }
      const register = { type: "register" };
      if (token != null) register.token = token;
      if (this._events.size) register.events = [...this._events];
      if (this._resume) {
        register.since = this._lastSeq;
        if (this._epoch !== null) register.epoch = this._epoch;
      }
      this._sentSince = this._resume;
      ws.send(JSON.stringify(register));
    };
    ws.onmessage = (ev) => this._message(ev.data);
    ws.onclose = (ev) => this._closed(ev.code, ev.reason);
    ws.onerror = () => {};
  }

  _detach() {
    const ws = this._ws;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this._ws = null;
    this._registered = false;
  }

  /** Gives up on a socket that does not answer: reconnects as after 1006. */
  _abandon(reason) {
    const ws = this._ws;
    this._detach();
    try {
      ws?.close(1000, reason);
    } catch {
      // closing a socket that never opened may throw; it is gone either way
    }
    this._closed(1006, reason);
  }

  _message(data) {
    this._alive();
    if (typeof data !== "string") {
      let push;
      try {
        push = decodeBinaryPush(data);
      } catch (error) {
        this._emit("error", { code: "bad_frame", message: String(error?.message ?? error) });
        return;
      }
      this._push(push);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._emit("error", { code: "bad_frame", message: "a text frame that is not JSON" });
      return;
    }
    switch (msg.type) {
      case "push":
        this._push({ event: msg.event, seq: msg.seq ?? null, ts: msg.ts, data: msg.data });
        break;
      case "registered":
        this._onRegistered(msg);
        break;
      case "recovered":
        if (Number.isInteger(msg.to) && msg.to > this._lastSeq) this._lastSeq = msg.to;
        this._emit("recovered", { from: msg.from, to: msg.to, complete: msg.complete === true });
        break;
      case "error":
        this._emit("error", { code: msg.code, message: msg.message });
        break;
      case "subscribed":
      case "unsubscribed":
        this._emit("subscriptions", msg.events ?? []);
        break;
      default:
        // pong, refreshed: nothing to do.
        break;
    }
  }

  _push(push) {
    if (push.seq != null) {
      if (push.seq <= this._lastSeq) return; // already delivered
      this._lastSeq = push.seq;
    }
    this._emit("push", push);
  }

  _onRegistered(msg) {
    const first = !this._registered;
    this._registered = true;
    if (!first) return;
    this._clearTimers("connect");
    this._attempt = 0;
    if (!this._sentSince && Number.isInteger(msg.seq) && msg.seq > this._lastSeq) this._lastSeq = msg.seq;
    if (typeof msg.epoch === "string") {
      // A new stream (the gateway or its broker started over): the old seq
      // numbers mean nothing in it, so count from where it stands. The
      // server says `recovered` with complete:false, for the page to reload.
      if (this._epoch !== null && msg.epoch !== this._epoch) this._lastSeq = Number.isInteger(msg.seq) ? msg.seq : 0;
      this._epoch = msg.epoch;
    }
    // Every later connection resumes from lastSeq.
    this._resume = true;
    // Events subscribed or unsubscribed while the register was in flight.
    const server = new Set(msg.events ?? []);
    const missing = [...this._events].filter((e) => !server.has(e));
    const extra = [...server].filter((e) => !this._events.has(e));
    if (missing.length) this._send({ type: "subscribe", events: missing });
    if (extra.length) this._send({ type: "unsubscribe", events: extra });
    this._setState("connected");
    this._emit("subscriptions", msg.events ?? []);
    this._scheduleRefresh(0);
    this._schedulePing();
  }

  _alive() {
    this._clearTimers("pong");
  }

  _schedulePing() {
    const { pingInterval, pongTimeout } = this.options;
    if (!(pingInterval > 0)) return;
    this._timer("ping", pingInterval, () => {
      if (!this._registered) return;
      this._send({ type: "ping" });
      this._timer("pong", pongTimeout, () => this._abandon("no pong"));
      this._schedulePing();
    });
  }

  /** Refreshes the token ahead of its expiry; `failures` backs off a failed getToken. */
  _scheduleRefresh(failures) {
    const { getToken, refreshMargin, minReconnectDelay, maxReconnectDelay } = this.options;
    if (typeof getToken !== "function") return;
    const exp = tokenExpiry(this._token);
    if (exp == null) return;
    const due = refreshDelay(exp, Date.now(), refreshMargin);
    const wait = failures ? Math.min(reconnectDelay(failures - 1, minReconnectDelay, maxReconnectDelay), Math.max(0, exp - Date.now())) : due;
    const generation = this._generation;
    this._timer("refresh", wait, async () => {
      let token;
      try {
        token = await getToken();
      } catch (error) {
        if (generation !== this._generation) return;
        this._emit("error", { code: "token_unavailable", message: String(error?.message ?? error) });
        // Past the expiry the server closes with 4002, which fetches again.
        if (tokenExpiry(this._token) > Date.now()) this._scheduleRefresh(failures + 1);
        return;
      }
      if (generation !== this._generation || !this._registered) return;
      this._token = token;
      this._tokenFetched = true;
      this._send({ type: "refresh", token });
      this._scheduleRefresh(0);
    });
  }

  _closed(code, reason) {
    this._generation++;
    this._clearTimers();
    this._detach();
    const action = closeAction(code);
    if (action === "stop") {
      this._setState("closed", { code, reason });
      return;
    }
    if (action === "token") {
      if (typeof this.options.getToken !== "function") {
        this._emit("error", { code: "token_expired", message: "the token expired and there is no getToken to renew it" });
        this._setState("closed", { code, reason });
        return;
      }
      this._token = null; // fetch a fresh one before reconnecting
    }
    this._retry({ code, reason });
  }

  _retry({ code, reason }) {
    const hint = reconnectHint(reason);
    const { minReconnectDelay, maxReconnectDelay } = this.options;
    const delay = hint ?? reconnectDelay(this._attempt, minReconnectDelay, maxReconnectDelay);
    this._attempt++;
    this._setState("disconnected", { code, reason, delay });
    this._timer("reconnect", delay, () => this._open());
  }
}

export default PushgateClient;
