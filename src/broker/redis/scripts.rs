//! The key layout under the prefix and the Lua scripts that keep each
//! operation atomic in Redis. [`redis::Script`] runs a script with EVALSHA
//! and loads it again when Redis answers NOSCRIPT (after a restart or a
//! `SCRIPT FLUSH`).
//!
//! Keys and channels, `P` being the prefix and `U` a user id (always last,
//! so any byte of it is unambiguous):
//! - `P:pos:U` — hash `{seq, epoch}`: the user's stream position. Expires
//!   `history_meta_ttl` after the last push.
//! - `P:hist:U` — list of encoded pushes, oldest first, capped at
//!   `history_size`. Expires `history_ttl` after the last push.
//! - `P:idem:N:U:K` — the seq given to idempotency key `K` (`N` is the byte
//!   length of `U`, so `U` and `K` cannot be confused). Expires after
//!   `history_ttl`.
//! - `P:conns:U` — hash node id → that node's live connections of the user.
//! - `P:node:ID` — the node's lease: exists while the node is alive.
//! - channels `P:push:U` (a user's pushes) and `P:control` (every node).

use redis::Script;

/// The names of keys and channels under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub(crate) fn pos(&self, user: &str) -> String {
        format!("{}:pos:{user}", self.prefix)
    }

    pub(crate) fn history(&self, user: &str) -> String {
        format!("{}:hist:{user}", self.prefix)
    }

    pub(crate) fn idempotency(&self, user: &str, key: &str) -> String {
        format!("{}:idem:{}:{user}:{key}", self.prefix, user.len())
    }

    pub(crate) fn conns(&self, user: &str) -> String {
        format!("{}:conns:{user}", self.prefix)
    }

    /// The lease key of every node is this followed by the node id.
    pub(crate) fn lease_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    pub(crate) fn lease(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.prefix)
    }

    pub(crate) fn push_channel(&self, user: &str) -> String {
        format!("{}:push:{user}", self.prefix)
    }

    /// The user a push channel belongs to, or `None` for another channel.
    pub(crate) fn user_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":push:")
    }

    pub(crate) fn control_channel(&self) -> String {
        format!("{}:control", self.prefix)
    }
}

/// Redis's clock in Unix milliseconds (a Lua snippet).
const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// Publish. KEYS: pos, history, [idempotency]. ARGV: epoch candidate, meta
/// ttl ms, history size, history ttl ms, channel, message ttl ms (0 = none),
/// encoded tail. Returns {seq, epoch, duplicate (0/1), receivers}.
const PUBLISH: &str = r"
local pos, hist, idem = KEYS[1], KEYS[2], KEYS[3]
if idem then
  local first = redis.call('GET', idem)
  if first then
    return {tonumber(first), redis.call('HGET', pos, 'epoch') or '', 1, 0}
  end
end
if redis.call('HSETNX', pos, 'epoch', ARGV[1]) == 1 then
  -- A new stream: whatever history is left belongs to a forgotten one.
  redis.call('DEL', hist)
end
local seq = redis.call('HINCRBY', pos, 'seq', 1)
local epoch = redis.call('HGET', pos, 'epoch')
redis.call('PEXPIRE', pos, ARGV[2])
if idem then
  redis.call('SET', idem, seq, 'PX', ARGV[4])
end
local now = now_ms()
local ttl = tonumber(ARGV[6])
local expires = 0
if ttl > 0 then expires = now + ttl end
local msg = string.char(1) .. struct.pack('>I8I8I8', seq, now, expires)
  .. string.char(#epoch) .. epoch .. ARGV[7]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', hist, msg)
  redis.call('LTRIM', hist, -size, -1)
  redis.call('PEXPIRE', hist, ARGV[4])
end
return {seq, epoch, 0, redis.call('PUBLISH', ARGV[5], msg)}
";

/// History. KEYS: pos, history. ARGV: epoch candidate, ttl ms of a position
/// created here. Returns {seq, epoch, now ms, entries}. A user with no
/// position gets one (seq 0) so the epoch a client is told stays the one its
/// first push gets.
const HISTORY: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local p = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
return {tonumber(p[1] or '0'), p[2], now_ms(), redis.call('LRANGE', KEYS[2], 0, -1)}
";

/// Sums the counts of a presence hash whose node lease is alive (or is
/// `self`), deleting the fields of dead nodes.
const LIVE_TOTAL: &str = r"
local function live_total(key, leases, self)
  local total = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if all[i] == self or redis.call('EXISTS', leases .. all[i]) == 1 then
      total = total + tonumber(all[i + 1])
    else
      redis.call('HDEL', key, all[i])
    end
  end
  return total
end
";

/// Add a connection. KEYS: conns. ARGV: lease prefix, node id, limit, ttl
/// ms. Returns {admitted (0/1), cluster count (after the add when admitted)}.
const ADD_CONNECTION: &str = r"
local total = live_total(KEYS[1], ARGV[1], ARGV[2])
if total >= tonumber(ARGV[3]) then
  return {0, total}
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, total + 1}
";

/// Remove a connection. KEYS: conns. ARGV: node id, ttl ms.
const REMOVE_CONNECTION: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Online counts. KEYS: conns of each user. ARGV: lease prefix. Returns one
/// count per key.
const ONLINE: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = live_total(key, ARGV[1], '')
end
return out
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) history: Script,
    pub(crate) add_connection: Script,
    pub(crate) remove_connection: Script,
    pub(crate) online: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(&format!("{NOW_MS}{PUBLISH}")),
            history: Script::new(&format!("{NOW_MS}{HISTORY}")),
            add_connection: Script::new(&format!("{LIVE_TOTAL}{ADD_CONNECTION}")),
            remove_connection: Script::new(REMOVE_CONNECTION),
            online: Script::new(&format!("{LIVE_TOTAL}{ONLINE}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_of_a_push_channel() {
        let keys = Keys::new("pg");
        assert_eq!(keys.user_of(&keys.push_channel("a:b")), Some("a:b"));
        assert_eq!(keys.user_of(&keys.control_channel()), None);
        assert_ne!(keys.idempotency("a:b", "c"), keys.idempotency("a", "b:c"));
    }
}
