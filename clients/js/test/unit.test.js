// The SDK's pure parts, in node: backoff and jitter bounds, the close-code
// table, the reconnect hint, binary frames, JWT expiry and refresh timing.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  closeAction,
  decodeBinaryPush,
  reconnectDelay,
  reconnectHint,
  refreshDelay,
  tokenExpiry,
} from "../pushgate.js";

describe("reconnectDelay", () => {
  test("stays within [min, min(max, min * 2^(attempt+1))]", () => {
    const min = 500;
    const max = 30_000;
    for (let attempt = 0; attempt < 40; attempt++) {
      const cap = Math.min(max, min * 2 ** (attempt + 1));
      assert.equal(reconnectDelay(attempt, min, max, () => 0), min, `attempt ${attempt}, random 0`);
      assert.equal(reconnectDelay(attempt, min, max, () => 1), cap, `attempt ${attempt}, random 1`);
      for (let i = 0; i < 200; i++) {
        const d = reconnectDelay(attempt, min, max);
        assert.ok(d >= min && d <= cap, `attempt ${attempt}: ${d} not in [${min}, ${cap}]`);
      }
    }
  });

  test("the window doubles until the maximum", () => {
    const caps = [0, 1, 2, 3, 4, 5, 6].map((a) => reconnectDelay(a, 100, 5000, () => 1));
    assert.deepEqual(caps, [200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  test("the jitter is spread over the whole window", () => {
    const samples = Array.from({ length: 2000 }, () => reconnectDelay(5, 100, 10_000));
    const lo = samples.filter((d) => d < 100 + (6400 - 100) / 4).length;
    const hi = samples.filter((d) => d > 100 + ((6400 - 100) * 3) / 4).length;
    // Attempt 5: the window is [100, 6400]. Uniform: about a quarter (500 of
    // 2000) in each outer quarter; the bounds are 7 standard deviations wide.
    assert.ok(lo > 350 && lo < 650, `lower quarter: ${lo}`);
    assert.ok(hi > 350 && hi < 650, `upper quarter: ${hi}`);
    assert.ok(new Set(samples).size > 500, "many distinct delays");
  });

  test("odd inputs stay finite and in bounds", () => {
    assert.equal(reconnectDelay(1e9, 500, 30_000, () => 1), 30_000);
    assert.equal(reconnectDelay(Infinity, 500, 30_000, () => 1), 30_000);
    assert.equal(reconnectDelay(NaN, 500, 30_000, () => 1), 1000);
    assert.equal(reconnectDelay(-3, 500, 30_000, () => 1), 1000);
    assert.equal(reconnectDelay(3, 0, 0, () => 1), 0);
    assert.ok(Number.isFinite(reconnectDelay(50, 0, 1000, () => 0.5)));
    assert.equal(reconnectDelay(3, 800, 200, () => 1), 800, "max below min: min wins");
  });
});

describe("closeAction", () => {
  test("follows the close-code table", () => {
    for (const code of [1001, 1006, 1011, 4000, 4001, 4003, 4499, 1000, 1005, 1012]) {
      assert.equal(closeAction(code), "reconnect", String(code));
    }
    assert.equal(closeAction(4002), "token");
    for (const code of [1003, 1008, 1009, 4500, 4501, 4502, 4503, 4999]) {
      assert.equal(closeAction(code), "stop", String(code));
    }
  });
});

describe("reconnectHint", () => {
  test("reads reconnect_after_ms from a close reason", () => {
    assert.equal(reconnectHint("going away; reconnect_after_ms=997"), 997);
    assert.equal(reconnectHint("reconnect_after_ms=0"), 0);
    assert.equal(reconnectHint("going away"), null);
    assert.equal(reconnectHint(""), null);
    assert.equal(reconnectHint(undefined), null);
    assert.equal(reconnectHint("x_reconnect_after_ms=5"), null);
  });
});

describe("decodeBinaryPush", () => {
  const frame = (header, payload) => {
    const h = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(2 + h.length + payload.length);
    out[0] = h.length >> 8;
    out[1] = h.length & 0xff;
    out.set(h, 2);
    out.set(payload, 2 + h.length);
    return out;
  };

  test("splits header and payload", () => {
    const payload = Uint8Array.from([0, 1, 2, 255, 10]);
    const p = decodeBinaryPush(frame({ event: "img", seq: 42, ts: 1764300000123 }, payload).buffer);
    assert.deepEqual(p, { event: "img", seq: 42, ts: 1764300000123, data: payload });
  });

  test("a broadcast has no seq; a header over 255 bytes uses both length bytes", () => {
    const event = "e".repeat(300);
    const p = decodeBinaryPush(frame({ event, ts: 1 }, new Uint8Array(0)));
    assert.equal(p.seq, null);
    assert.equal(p.event, event);
    assert.equal(p.data.length, 0);
  });

  test("refuses truncated frames", () => {
    assert.throws(() => decodeBinaryPush(new Uint8Array([0])));
    assert.throws(() => decodeBinaryPush(new Uint8Array([0, 9, 123])));
  });
});

describe("tokens", () => {
  const jwt = (claims) =>
    [{ alg: "HS256" }, claims].map((o) => Buffer.from(JSON.stringify(o)).toString("base64url")).join(".") + ".sig";

  test("tokenExpiry reads exp (base64url, no padding) without verifying", () => {
    assert.equal(tokenExpiry(jwt({ sub: "u1", exp: 1764300000 })), 1764300000 * 1000);
    // Claims whose base64url form needs '-' / '_' and padding.
    const claims = { sub: "ü?>>~~", exp: 2000000000, pad: "ab" };
    const token = jwt(claims);
    assert.match(token.split(".")[1], /[-_]/);
    assert.equal(tokenExpiry(token), 2000000000 * 1000);
  });

  test("tokenExpiry is null without a usable exp", () => {
    assert.equal(tokenExpiry(jwt({ sub: "u1" })), null);
    assert.equal(tokenExpiry(jwt({ exp: "soon" })), null);
    assert.equal(tokenExpiry("u1"), null);
    assert.equal(tokenExpiry("a.%%%.c"), null);
    assert.equal(tokenExpiry(null), null);
  });

  test("refreshDelay: the margin before exp, at most half-way through what is left", () => {
    const now = 1_000_000;
    assert.equal(refreshDelay(now + 3_600_000, now, 30_000), 3_570_000);
    assert.equal(refreshDelay(now + 2_000, now, 30_000), 1_000);
    assert.equal(refreshDelay(now + 10_000, now, 0), 10_000);
    assert.equal(refreshDelay(now - 5, now, 30_000), 0);
  });
});
