//! The Lua scripts. Each touches only one client's keys (one hash tag), so each
//! runs in one slot on a Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: client, subs. ARGV: channel, max subscriptions, grace (ms).
/// Returns 0 (no such client), 1 (added), 2 (already subscribed), 3 (at the limit).
/// The subscription set outlives the client hash by the grace period, so that
/// the collector can still read what an expired client was subscribed to.
pub(crate) static SUBSCRIBE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 2 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 3 end
redis.call('SADD', KEYS[2], ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[3])) end
return 1
",
    )
});

/// KEYS: client, subs. Deletes both; returns the subscriptions, or nil if the
/// client hash was already gone (so exactly one caller reports the destruction;
/// a client that expired is reported by the collector).
pub(crate) static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local subs = redis.call('SMEMBERS', KEYS[2])
local gone = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if gone == 0 then return false end
return subs
",
    )
});

/// KEYS: client, subs. For the collector: if the client hash still lives, returns
/// its remaining lifetime (ms; -1 if it has none); otherwise deletes the
/// subscription set and returns what it held. Whether to report the client is
/// decided by removing it from the clients index (`ZREM` says who did).
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return ttl end
local subs = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return subs
",
    )
});

/// KEYS: client. ARGV: cursor, node, now (ms), the cursor before the last
/// answer, the last answer's request (connect id, or empty). Records how far the
/// client has been handed messages (`cur`), and when (`at`: a takeover judges the
/// cursor's age by it), and what it had surely read before the last answer
/// (`prev`, `req`: a takeover for the same request starts there, as the answer
/// was lost), if this node still owns the client. Returns 1 (recorded), 0 (the
/// client is gone; a plain HSET would recreate it without a lifetime) or 2
/// (another node took the client over since: this node's queue for it is stale).
pub(crate) static SET_CURSOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local own = redis.call('HGET', KEYS[1], 'own')
if own and own ~= ARGV[2] then return 2 end
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'at', ARGV[3], 'prev', ARGV[4], 'req', ARGV[5])
return 1
",
    )
});

/// KEYS: client. ARGV: node. Makes this node the client's owner and returns its
/// cursor, when it was recorded (ms), the cursor before the last answer and that
/// answer's request, in one step so that the former owner cannot move the cursor
/// in between; nil if the client is gone.
pub(crate) static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'own', ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'cur') or ''
local at = redis.call('HGET', KEYS[1], 'at') or '0'
local prev = redis.call('HGET', KEYS[1], 'prev') or cur
local req = redis.call('HGET', KEYS[1], 'req') or ''
return {cur, at, prev, req}
",
    )
});

/// KEYS: lock. ARGV: token. Releases the lock only if this owner still holds it.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Every script, for loading before they are used in a pipeline.
pub(crate) fn all() -> [&'static Script; 6] {
    [&SUBSCRIBE, &DESTROY, &REAP, &SET_CURSOR, &ADOPT, &UNLOCK]
}
