//! The faye-redis layout: the keys, values, scores, notification channels and
//! GC lock of Node Faye's Redis engine (npm `faye-redis` 0.2.0), so that
//! faye-rs nodes and Node Faye servers on one Redis serve the same clients and
//! channels side by side during a rolling migration.
//!
//! With `ns` the namespace (faye-redis's default: empty):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ns/clients` | sorted set | client ids scored by their last ping (ms) |
//! | `ns/clients/ID/channels` | set | the client's subscriptions |
//! | `ns/channelsCHANNEL` | set | the channel's subscribers (`/channels/a/*`) |
//! | `ns/clients/ID/messages` | list | the client's queued messages (JSON) |
//! | `ns/locks/gc` | string | the collector's lock: its expiry (ms) |
//! | `ns/notifications/messages` | pub/sub | a client id that has mail |
//! | `ns/notifications/close` | pub/sub | a client id that was destroyed |
//!
//! What faye-rs adds, under `ns/faye-rs/`, no Node server reads: the last answer
//! to a client's long-poll connect (so that an answer lost on the way is given
//! again), and the state of a publish whose fan-out is delivered in chunks.
//!
//! Semantics are Node Faye's: a client exists while its score is within 1.6 ×
//! the timeout; the collector, under the lock, destroys clients older than 2 ×
//! the timeout; a destroyed client's id is published on the close channel, and
//! every node reports `Close` for it. Unlike faye-redis, every operation is one
//! script (atomic, one round trip), a publish's fan-out runs inside Redis in
//! chunks, and a take hands out what it removed only to a connect that is
//! there to answer (see [`FayeRedisEngine`]).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, EngineEvent,
    generate_client_id,
};
use faye_protocol::Message;
use futures_util::StreamExt as _;
use redis::aio::PubSub;
use redis::{RedisError, Script, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Conn, Target};
use crate::{
    Collect, Error, RedisConfig, backend, collect_expired, lock, malformed, ms, now_ms,
    query_scripts, slow_consumer, version_key,
};

/// Recipients one publish script delivers to before it hands the rest to a
/// follow-up script: Redis runs one script at a time, so a fan-out to 100,000
/// clients is 100 short scripts, not one that stalls every other command.
const FAN_OUT_CHUNK: usize = 1000;
/// How long a chunked publish's state lives in Redis if this node dies mid-way.
const CHUNK_STATE_TTL: Duration = Duration::from_secs(10);
/// Most publishes sent in one pipeline.
const PUBLISH_BATCH: usize = 256;
/// faye-redis's lock staleness: a lock older than this is taken over.
const LOCK_TIMEOUT_MS: u64 = 120_000;
/// The collector's period at most (faye-redis's default `gc` option).
const GC_EVERY: Duration = Duration::from_secs(60);
/// Expired clients one collector round trip looks at.
const GC_BATCH: usize = 100;

/// Node Faye's engine on Redis, spoken by faye-rs: see the module's table.
///
/// Refuses a Redis Cluster (faye-redis's commands span slots) and Sentinel
/// (faye-redis cannot follow a failover, so Node servers sharing the data could
/// not either). A faye-rs node in this layout differs from a faye-redis node
/// only where faye-redis loses or stalls:
///
/// - A take (`take_queue`) removes the queue only when a connection is there to
///   carry it, and keeps a long-poll answer until the client's next connect
///   (under `ns/faye-rs/`), so that the same connect asking again gets it again.
/// - A publish is one script: the union of the subscriber sets, and per live
///   recipient `RPUSH` and a notification, inside Redis, 1,000
///   recipients per script. A client whose queue grows past the server's
///   `max_queue` is destroyed (a Node client is too: its next request is told to
///   handshake again).
/// - Destroying a client is one script: its subscriptions, queue and score go
///   together, and only the caller that removed the score reports it.
///
/// Where faye-redis runs a command per message, each faye-rs operation is a
/// single round trip.
#[derive(Clone)]
pub struct FayeRedisEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FayeRedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FayeRedisEngine").field("namespace", &self.inner.keys.ns).finish()
    }
}

struct Keys {
    ns: String,
    clients: String,
    gc_lock: String,
    mail: String,
    close: String,
    /// This node's chunked-publish state: the message, and who is left.
    gate: String,
    rest: String,
}

impl Keys {
    fn new(ns: &str, node: &str) -> Self {
        Self {
            ns: ns.to_owned(),
            clients: format!("{ns}/clients"),
            gc_lock: format!("{ns}/locks/gc"),
            mail: format!("{ns}/notifications/messages"),
            close: format!("{ns}/notifications/close"),
            gate: format!("{ns}/faye-rs/publishing/{node}/message"),
            rest: format!("{ns}/faye-rs/publishing/{node}/recipients"),
        }
    }

    fn channels_of(&self, id: &ClientId) -> String {
        format!("{}/clients/{}/channels", self.ns, id.as_str())
    }

    fn subscribers(&self, channel: &str) -> String {
        format!("{}/channels{}", self.ns, channel)
    }

    fn queue(&self, id: &ClientId) -> String {
        format!("{}/clients/{}/messages", self.ns, id.as_str())
    }

    fn answer(&self, id: &ClientId) -> String {
        format!("{}/faye-rs/clients/{}/answer", self.ns, id.as_str())
    }
}

struct Inner {
    keys: Keys,
    conn: Conn,
    /// For the notification subscriber, which opens its own connection.
    url: String,
    ca_cert: Option<Vec<u8>>,
    ctx: OnceLock<EngineContext>,
    lane: mpsc::UnboundedSender<Publish>,
    lane_rx: Mutex<Option<mpsc::UnboundedReceiver<Publish>>>,
    /// The notification subscription `connect` made, until `start` listens on it:
    /// a notification sent once `connect` has returned is not missed.
    pubsub: Mutex<Option<PubSub>>,
    /// Clients this node took queues for: woken after the subscriber reconnects,
    /// since notifications sent meanwhile were lost. Forgotten when closed.
    held: Mutex<HashSet<ClientId>>,
    /// Clients this node destroyed and reported `Close` for, whose close
    /// notification (every node gets it, this one too) is not reported again.
    closed_here: Mutex<HashSet<ClientId>>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    unreachable: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A publish waiting in the lane: its channel keys, its message, and where its
/// outcome goes (the recipients whose queue overflowed).
struct Publish {
    keys: Vec<String>,
    message: EncodedMessage,
    done: oneshot::Sender<Result<Vec<String>, EngineError>>,
}

impl FayeRedisEngine {
    /// Connects to the one Redis server of `config` (`redis://`, `rediss://`,
    /// `redis+unix://`) with faye-redis's key layout under `config`'s
    /// namespace, which must be the Node servers' `namespace` option (faye-redis's
    /// default is empty: `RedisConfig::new(url).namespace("")`). The CA
    /// certificate and response timeout apply; the retention and ring capacity
    /// are the native layout's and are not used.
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        let url = match config.target()? {
            Target::Standalone(url) => url,
            Target::Sentinel(_) => {
                return Err(Error::Unsupported(
                    "Sentinel: faye-redis cannot follow a failover, so Node Faye servers \
                     sharing the layout could not either; use one Redis address",
                ));
            }
            Target::Cluster(_) => {
                return Err(Error::Unsupported(
                    "Redis Cluster: faye-redis's keys have no hash tags and its commands span \
                     slots; use one Redis server",
                ));
            }
        };
        let node: String = rand::random::<[u8; 8]>().iter().map(|b| format!("{b:02x}")).collect();
        let keys = Keys::new(&config.namespace, &node);
        let settings = conn::Settings {
            response_timeout: config.response_timeout,
            connection_timeout: config.response_timeout,
            retries: crate::RECONNECT_RETRIES,
            ca_cert: config.ca_cert.clone(),
            bus: String::new(),
            master_epoch: Arc::default(),
        };
        let mut conn = conn::open(&Target::Standalone(url.clone()), &settings).await?;
        let info: String =
            redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(Error::Redis)?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map_or_else(|| "unknown".to_owned(), |v| v.trim().to_owned());
        // LMOVE (a repeated take) needs 6.2.
        if version_key(&version) < (6, 2) {
            return Err(Error::Version { found: version });
        }
        crate::load(&mut conn, &*SCRIPTS).await.map_err(Error::Redis)?;
        let pubsub =
            subscribe(&url, config.ca_cert.as_deref(), &keys).await.map_err(Error::Redis)?;
        let (lane, lane_rx) = mpsc::unbounded_channel();
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                conn,
                url,
                ca_cert: config.ca_cert,
                ctx: OnceLock::new(),
                lane,
                lane_rx: Mutex::new(Some(lane_rx)),
                pubsub: Mutex::new(Some(pubsub)),
                held: Mutex::new(HashSet::new()),
                closed_here: Mutex::new(HashSet::new()),
                cancel: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
                unreachable: AtomicBool::new(false),
            }),
        })
    }
}

/// KEYS: the clients index. ARGV: namespace, client id, the score a collector
/// destroys at or below (empty: destroy whatever the score). Removes the client's
/// subscriptions (from both sides), queue, kept answer and score, and publishes
/// its id on the close channel. Returns `{removed, channels...}`: `removed` is 1
/// only for the one caller whose `ZREM` removed the client, who reports it.
static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ns, id = ARGV[1], ARGV[2]
if ARGV[3] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) > tonumber(ARGV[3]) then return {0} end
end
local own = ns .. '/clients/' .. id .. '/channels'
local channels = redis.call('SMEMBERS', own)
for _, channel in ipairs(channels) do
  redis.call('SREM', ns .. '/channels' .. channel, id)
end
redis.call('DEL', own, ns .. '/clients/' .. id .. '/messages', ns .. '/faye-rs/clients/' .. id .. '/answer')
local removed = redis.call('ZREM', KEYS[1], id)
if removed == 1 then redis.call('PUBLISH', ns .. '/notifications/close', id) end
local out = {removed}
for _, channel in ipairs(channels) do out[#out + 1] = channel end
return out
",
    )
});

/// KEYS: the client's channels, the channel's subscribers. ARGV: channel, client
/// id, most subscriptions. Returns 1 (added), 2 (already subscribed), 3 (at the
/// limit). Both sets, as faye-redis writes them.
static SUBSCRIBE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  return 2
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 3 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
",
    )
});

/// The fan-out both publish scripts share: for each recipient that is alive (its
/// score newer than ARGV[3]), `RPUSH` the message and notify; a dead one's queue
/// is deleted, as faye-redis does. Recipients whose queue passed ARGV[4] are
/// appended to `over`.
const DELIVER: &str = r"
local function deliver(ids, message, over)
  local ns, alive_after, max_queue = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
  local clients, mail = ns .. '/clients', ns .. '/notifications/messages'
  for _, id in ipairs(ids) do
    local queue = ns .. '/clients/' .. id .. '/messages'
    local score = redis.call('ZSCORE', clients, id)
    if score and tonumber(score) > alive_after then
      if redis.call('RPUSH', queue, message) > max_queue then over[#over + 1] = id end
      redis.call('PUBLISH', mail, id)
    else
      redis.call('DEL', queue)
    end
  end
end
";

/// KEYS: this node's chunk state (message, recipients left), then the
/// subscriber sets of every name the channel matches. ARGV: namespace, message,
/// alive-after (ms), most queued messages, chunk size, chunk state lifetime (ms).
/// Returns `{state, overflowed...}`: state 0 (delivered), 1 (more recipients
/// left: continue with CONTINUE), or -1 (this node's previous publish is still
/// being delivered in chunks: nothing done, send it again afterwards, so that
/// publishes reach every recipient in the order they were made).
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DELIVER}{}",
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local out = {0}
local chunk = tonumber(ARGV[5])
local ids = redis.call('SUNION', unpack(KEYS, 3))
if #ids <= chunk then
  deliver(ids, ARGV[2], out)
  return out
end
redis.call('SUNIONSTORE', KEYS[2], unpack(KEYS, 3))
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
deliver(redis.call('SPOP', KEYS[2], chunk), ARGV[2], out)
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) else out[1] = 1 end
return out
"
    ))
});

/// KEYS and ARGV as PUBLISH (ARGV[2] unused): delivers the next chunk of the
/// chunked publish in progress. Returns as PUBLISH (0 when done).
static CONTINUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DELIVER}{}",
        r"
local message = redis.call('GET', KEYS[1])
if not message then return {0} end
local out = {1}
deliver(redis.call('SPOP', KEYS[2], tonumber(ARGV[5])), message, out)
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  out[1] = 0
else
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return out
"
    ))
});

/// KEYS: the client's queue, its kept answer. ARGV: the long-poll connect's id
/// (empty for a push down a socket), the answer's lifetime (ms). Takes the queue.
/// For a connect, the answer is kept (the connect's id first, then the
/// messages) in place of the queue, by `RENAME`; the same connect asking again
/// gets it again followed by what is new. Returns the messages.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local request = ARGV[1]
if request == '' then
  local messages = redis.call('LRANGE', KEYS[1], 0, -1)
  redis.call('DEL', KEYS[1], KEYS[2])
  return messages
end
if redis.call('LINDEX', KEYS[2], 0) == request then
  while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do end
else
  redis.call('DEL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('LPUSH', KEYS[2], request)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('LRANGE', KEYS[2], 1, -1)
",
    )
});

static SCRIPTS: LazyLock<[&'static Script; 5]> =
    LazyLock::new(|| [&*DESTROY, &*SUBSCRIBE, &*PUBLISH, &*CONTINUE, &*TAKE]);

impl Inner {
    fn ctx(&self) -> Result<&EngineContext, EngineError> {
        self.ctx.get().ok_or(EngineError::Shutdown)
    }

    fn timeout_ms(&self) -> Result<u64, EngineError> {
        Ok(ms(self.ctx()?.timeout))
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn emit(&self, event: EngineEvent) {
        if let Some(ctx) = self.ctx.get() {
            ctx.listener.event(event);
        }
    }

    /// Node Faye's test of life: pinged within 1.6 × the timeout.
    fn alive_after(&self) -> Result<u64, EngineError> {
        Ok(now_ms().saturating_sub(self.timeout_ms()? * 8 / 5))
    }

    /// Invokes a script, loading the scripts again if Redis lost them.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, EngineError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        let (value,): (T,) = self.query_pipe(&pipe).await?;
        Ok(value)
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, EngineError> {
        query_scripts(self.conn(), pipe, &*SCRIPTS).await
    }

    /// Destroys `client` if its score is at most `at_most` (any score if
    /// `None`); reports it if this call removed it.
    async fn destroy(&self, client: &ClientId, at_most: Option<u64>) -> Result<(), EngineError> {
        let mut invocation = DESTROY.key(&self.keys.clients);
        invocation.arg(&self.keys.ns).arg(client.as_str());
        invocation.arg(at_most.map(|s| s.to_string()).unwrap_or_default());
        // Before the script runs: its close notification may come back before
        // its reply does.
        {
            let mut closed_here = lock(&self.closed_here);
            // Entries whose notification never came (the subscriber was down).
            if closed_here.len() >= 10_000 {
                closed_here.clear();
            }
            closed_here.insert(*client);
        }
        let reply: Result<Vec<Value>, _> = self.invoke(&invocation).await;
        let mut reply = reply.inspect_err(|_| self.not_closed_here(client))?.into_iter();
        let removed = reply.next().and_then(|v| redis::from_redis_value::<i64>(v).ok());
        if removed != Some(1) {
            self.not_closed_here(client);
            return if removed.is_some() { Ok(()) } else { Err(malformed("destroy")) };
        }
        for channel in reply {
            let channel: String =
                redis::from_redis_value(channel).map_err(|e| backend(e.into()))?;
            self.emit(EngineEvent::Unsubscribe(*client, channel));
        }
        self.emit(EngineEvent::Disconnect(*client));
        lock(&self.held).remove(client);
        self.emit(EngineEvent::Close(*client));
        Ok(())
    }

    /// This node did not destroy `client` after all: its close notification,
    /// if one comes, is another node's.
    fn not_closed_here(&self, client: &ClientId) {
        lock(&self.closed_here).remove(client);
    }

    /// A close notification: every node reports `Close` for the client, except
    /// the one that destroyed it, which has already.
    fn closed(&self, client: ClientId) {
        lock(&self.held).remove(&client);
        if lock(&self.closed_here).remove(&client) {
            return;
        }
        self.emit(EngineEvent::Close(client));
    }

    /// faye-redis's lock: `SETNX` of an expiry time, taken over with `GETSET`
    /// once that time has passed. Returns the expiry if this node got it.
    async fn take_gc_lock(&self) -> Result<Option<u64>, EngineError> {
        let now = now_ms();
        let expiry = now + LOCK_TIMEOUT_MS + 1;
        let mut conn = self.conn();
        let set: bool = redis::cmd("SETNX")
            .arg(&self.keys.gc_lock)
            .arg(expiry)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if set {
            return Ok(Some(expiry));
        }
        let current: Option<String> = redis::cmd("GET")
            .arg(&self.keys.gc_lock)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let Some(current) = current else {
            return Ok(None);
        };
        if current.parse::<u64>().is_ok_and(|held_until| now < held_until) {
            return Ok(None);
        }
        let old: Option<String> = redis::cmd("GETSET")
            .arg(&self.keys.gc_lock)
            .arg(expiry)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok((old.as_deref() == Some(current.as_str())).then_some(expiry))
    }

    /// One collector pass, if this node gets the lock: destroys the clients not
    /// pinged for 2 × the timeout.
    async fn collect(&self) -> Result<(), EngineError> {
        let timeout = self.timeout_ms()?;
        let Some(expiry) = self.take_gc_lock().await? else {
            return Ok(());
        };
        let result = self.collect_locked(timeout).await;
        if now_ms() < expiry {
            let _: Result<i64, _> =
                redis::cmd("DEL").arg(&self.keys.gc_lock).query_async(&mut self.conn()).await;
        }
        result
    }

    async fn collect_locked(&self, timeout: u64) -> Result<(), EngineError> {
        let cutoff = now_ms().saturating_sub(2 * timeout);
        let mut offset = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.clients)
                .arg(0)
                .arg(cutoff)
                .arg("LIMIT")
                .arg(offset)
                .arg(GC_BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            for id in &ids {
                match ClientId::parse(id) {
                    Some(client) => self.destroy(&client, Some(cutoff)).await?,
                    // Not an id any Faye server issues: only its score can go.
                    None => {
                        offset += 1;
                        tracing::warn!(member = %id, "ignoring a malformed client id in the clients index");
                    }
                }
            }
            if ids.len() < GC_BATCH {
                return Ok(());
            }
        }
    }

    /// After the notification subscriber reconnects: the notifications sent
    /// meanwhile are lost, so every client this node holds looks at its queue.
    fn wake_all(&self) {
        let Some(ctx) = self.ctx.get() else {
            return;
        };
        let held: Vec<ClientId> = lock(&self.held).iter().copied().collect();
        for id in &held {
            ctx.listener.mail(id);
        }
    }
}

/// Opens a connection of its own and subscribes it to the notification channels.
fn subscribe(
    url: &str,
    ca_cert: Option<&[u8]>,
    keys: &Keys,
) -> impl Future<Output = Result<PubSub, RedisError>> + Send + 'static {
    let client = match ca_cert {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) },
        ),
        None => redis::Client::open(url),
    };
    let (mail, close) = (keys.mail.clone(), keys.close.clone());
    async move {
        let mut pubsub = client?.get_async_pubsub().await?;
        pubsub.subscribe(&[&mail, &close]).await?;
        Ok(pubsub)
    }
}

/// Listens on the notification channels for as long as the engine lives,
/// starting with the subscription `connect` made:
/// mail for a client wakes its connection here (if any), and a destroyed
/// client's connections are closed. Reconnects with a backoff; what was missed
/// meanwhile is picked up by waking every held client.
async fn listen(inner: Weak<Inner>, first: PubSub, cancel: CancellationToken) {
    let mut failures = 0u32;
    let mut first = Some(first);
    loop {
        let pubsub = match first.take() {
            Some(pubsub) => Ok(pubsub),
            None => {
                let Some(engine) = inner.upgrade() else {
                    return;
                };
                let subscribed = subscribe(&engine.url, engine.ca_cert.as_deref(), &engine.keys);
                drop(engine);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    pubsub = subscribed => pubsub,
                }
            }
        };
        match pubsub {
            Ok(pubsub) => {
                let Some(engine) = inner.upgrade() else {
                    return;
                };
                if failures > 0 {
                    tracing::warn!("Redis notifications reachable again");
                    metrics::counter!(crate::RECONNECTS_METRIC).increment(1);
                    engine.unreachable.store(false, Ordering::Relaxed);
                    engine.wake_all();
                }
                drop(engine);
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        _ = cancel.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else {
                        break;
                    };
                    let Some(engine) = inner.upgrade() else {
                        return;
                    };
                    let Some(id) = std::str::from_utf8(message.get_payload_bytes())
                        .ok()
                        .and_then(ClientId::parse)
                    else {
                        continue;
                    };
                    if message.get_channel_name() == engine.keys.mail {
                        if let Some(ctx) = engine.ctx.get() {
                            ctx.listener.mail(&id);
                        }
                    } else {
                        engine.closed(id);
                    }
                }
                failures = 1;
                if let Some(engine) = inner.upgrade() {
                    engine.unreachable.store(true, Ordering::Relaxed);
                }
                tracing::error!("lost the Redis notification subscription; reconnecting");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %e, "cannot subscribe to Redis notifications; retrying");
                }
            }
        }
        let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Sends this node's publishes in the order they were made, pipelined, as
/// the native engine does. A fan-out larger than a chunk continues, chunk by
/// chunk, before anything later is delivered: publishes sent behind it in the
/// same pipeline find the chunk state and are sent again once it is done.
async fn send_publishes(
    inner: Weak<Inner>,
    mut lane: mpsc::UnboundedReceiver<Publish>,
    cancel: CancellationToken,
) {
    let mut pending: VecDeque<Publish> = VecDeque::new();
    loop {
        if pending.is_empty() {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                first = lane.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            pending.push_back(first);
        }
        while pending.len() < PUBLISH_BATCH {
            match lane.try_recv() {
                Ok(next) => pending.push_back(next),
                Err(_) => break,
            }
        }
        let Some(engine) = inner.upgrade() else {
            return;
        };
        let batch: Vec<Publish> = pending.drain(..pending.len().min(PUBLISH_BATCH)).collect();
        let deferred = match engine.send_batch(batch).await {
            Ok(deferred) => deferred,
            Err((e, senders)) => {
                for sender in senders {
                    let _ = sender.send(Err(EngineError::Backend(e.clone())));
                }
                Vec::new()
            }
        };
        // In order, ahead of anything newer.
        for publish in deferred.into_iter().rev() {
            pending.push_front(publish);
        }
    }
}

type Senders = Vec<oneshot::Sender<Result<Vec<String>, EngineError>>>;

impl Inner {
    fn publish_args(&self, invocation: &mut redis::ScriptInvocation<'_>, json: &[u8]) {
        let alive_after = self.alive_after().unwrap_or(0);
        let max_queue = self.ctx.get().map_or(usize::MAX, |c| c.limits.max_queue);
        invocation
            .arg(&self.keys.ns)
            .arg(json)
            .arg(alive_after)
            .arg(max_queue)
            .arg(FAN_OUT_CHUNK)
            .arg(ms(CHUNK_STATE_TTL));
    }

    /// Sends one pipeline of publishes. Returns those that must be sent again
    /// (behind a chunked one), or the error and every waiting sender.
    async fn send_batch(&self, batch: Vec<Publish>) -> Result<Vec<Publish>, (String, Senders)> {
        let invocations: Vec<_> = batch
            .iter()
            .map(|p| {
                let mut invocation = PUBLISH.key(&self.keys.gate);
                invocation.key(&self.keys.rest);
                for key in &p.keys {
                    invocation.key(key);
                }
                self.publish_args(&mut invocation, p.message.json());
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let replies: Result<Vec<Vec<Value>>, _> = self.query_pipe(&pipe).await;
        let replies = match replies {
            Ok(r) if r.len() == batch.len() => r,
            Ok(_) => {
                return Err(("unexpected Redis reply: publish pipeline".into(), senders(batch)));
            }
            Err(e) => return Err((e.to_string(), senders(batch))),
        };
        let mut deferred = Vec::new();
        let mut chunking = false;
        for (publish, reply) in batch.into_iter().zip(replies) {
            let (state, mut over) = parse_outcome(reply);
            match state {
                -1 => deferred.push(publish),
                1 => {
                    chunking = true;
                    match self.continue_publish(&mut over).await {
                        Ok(()) => {
                            let _ = publish.done.send(Ok(over));
                        }
                        Err(e) => {
                            let _ = publish.done.send(Err(e));
                        }
                    }
                }
                _ => {
                    let _ = publish.done.send(Ok(over));
                }
            }
        }
        if !deferred.is_empty() && !chunking {
            // Left by an earlier attempt that failed mid-way: nothing of this
            // node's is in progress, so the state is stale.
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(&self.keys.gate)
                .arg(&self.keys.rest)
                .query_async(&mut self.conn())
                .await;
        }
        Ok(deferred)
    }

    /// Delivers the rest of the chunked publish in progress.
    async fn continue_publish(&self, over: &mut Vec<String>) -> Result<(), EngineError> {
        loop {
            let mut invocation = CONTINUE.key(&self.keys.gate);
            invocation.key(&self.keys.rest);
            self.publish_args(&mut invocation, b"");
            let reply: Vec<Value> = self.invoke(&invocation).await?;
            let (state, more) = parse_outcome(reply);
            over.extend(more);
            if state == 0 {
                return Ok(());
            }
        }
    }
}

fn senders(batch: Vec<Publish>) -> Senders {
    batch.into_iter().map(|p| p.done).collect()
}

/// A publish script's `{state, overflowed ids...}`.
fn parse_outcome(reply: Vec<Value>) -> (i64, Vec<String>) {
    let mut reply = reply.into_iter();
    let state = reply.next().and_then(|v| redis::from_redis_value::<i64>(v).ok()).unwrap_or(0);
    let over = reply.filter_map(|v| redis::from_redis_value::<String>(v).ok()).collect();
    (state, over)
}

impl Collect for Inner {
    fn collect(&self) -> impl Future<Output = Result<(), EngineError>> + Send {
        Self::collect(self)
    }
    fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }
}

/// A queued message as a subscriber receives it: faye-redis stores the
/// publish as the publisher sent it (with its `clientId`, the publisher's
/// credential), and Node Faye strips that when it delivers; so does this.
fn delivery(json: &[u8]) -> Option<EncodedMessage> {
    let message: Message = serde_json::from_slice(json).ok()?;
    Some(EncodedMessage::delivery(&message))
}

impl Engine for FayeRedisEngine {
    fn start(&self, ctx: EngineContext) {
        let inner = &self.inner;
        // faye-redis collects every 60 s; a short timeout is collected sooner,
        // so that a client is never kept much past 2 × the timeout.
        let every = (ctx.timeout / 6).clamp(Duration::from_millis(10), GC_EVERY);
        if inner.ctx.set(ctx).is_err() {
            return;
        }
        let Some(lane) = lock(&inner.lane_rx).take() else {
            return;
        };
        let Some(pubsub) = lock(&inner.pubsub).take() else {
            return;
        };
        let weak = Arc::downgrade(inner);
        let mut tasks = lock(&inner.tasks);
        tasks.push(tokio::spawn(listen(weak.clone(), pubsub, inner.cancel.clone())));
        tasks.push(tokio::spawn(send_publishes(weak.clone(), lane, inner.cancel.clone())));
        tasks.push(tokio::spawn(collect_expired(weak, every, inner.cancel.clone())));
    }

    async fn create_client(&self) -> Result<ClientId, EngineError> {
        let inner = &self.inner;
        inner.ctx()?;
        loop {
            let id = generate_client_id();
            // faye-redis adds the id with score 0 (retrying on a clash), then
            // pings it: one ZADD NX with the ping's score does both.
            let added: i64 = redis::cmd("ZADD")
                .arg(&inner.keys.clients)
                .arg("NX")
                .arg(now_ms())
                .arg(id.as_str())
                .query_async(&mut inner.conn())
                .await
                .map_err(backend)?;
            if added == 1 {
                inner.emit(EngineEvent::Handshake(id));
                return Ok(id);
            }
        }
    }

    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        let inner = &self.inner;
        let alive_after = inner.alive_after()?;
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&inner.keys.clients)
            .arg(client.as_str())
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        Ok(score.is_some_and(|s| s > alive_after as f64))
    }

    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        self.inner.destroy(client, None).await
    }

    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        let inner = &self.inner;
        // XX: unlike faye-redis, a ping never brings back a destroyed client.
        redis::cmd("ZADD")
            .arg(&inner.keys.clients)
            .arg("XX")
            .arg(now_ms())
            .arg(client.as_str())
            .query_async::<()>(&mut inner.conn())
            .await
            .map_err(backend)
    }

    async fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> Result<faye_engine::Subscribed, EngineError> {
        let inner = &self.inner;
        let max = inner.ctx()?.limits.max_subscriptions;
        let mut invocation = SUBSCRIBE.key(inner.keys.channels_of(client));
        invocation.key(inner.keys.subscribers(channel.as_str()));
        invocation.arg(channel.as_str()).arg(client.as_str()).arg(max);
        let outcome: i64 = inner.invoke(&invocation).await?;
        Ok(match outcome {
            1 => {
                inner.emit(EngineEvent::Subscribe(*client, channel.as_str().to_owned()));
                faye_engine::Subscribed::Added
            }
            3 => faye_engine::Subscribed::LimitReached,
            _ => faye_engine::Subscribed::Unchanged,
        })
    }

    async fn unsubscribe(&self, client: &ClientId, channel: &Channel) -> Result<bool, EngineError> {
        let inner = &self.inner;
        let (removed, _): (i64, i64) = redis::pipe()
            .cmd("SREM")
            .arg(inner.keys.channels_of(client))
            .arg(channel.as_str())
            .cmd("SREM")
            .arg(inner.keys.subscribers(channel.as_str()))
            .arg(client.as_str())
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        if removed == 0 {
            return Ok(false);
        }
        inner.emit(EngineEvent::Unsubscribe(*client, channel.as_str().to_owned()));
        Ok(true)
    }

    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        let inner = &self.inner;
        // Into the lane before anything is awaited: the publish's place is fixed
        // when this future is first polled (see `Engine::publish`).
        let keys = channel.expand().iter().map(|name| inner.keys.subscribers(name)).collect();
        let (done, outcome) = oneshot::channel();
        let publish = Publish { keys, message, done };
        inner.lane.send(publish).map_err(|_| EngineError::Shutdown)?;
        let over = outcome.await.map_err(|_| EngineError::Shutdown)??;
        for id in over.iter().filter_map(|id| ClientId::parse(id)) {
            slow_consumer(&id);
            inner.destroy(&id, None).await?;
        }
        Ok(())
    }

    fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> impl Future<Output = Result<Vec<EncodedMessage>, EngineError>> + Send {
        // Boxed: a socket waits in this for each delivery, and every socket's task
        // would otherwise keep room for a Redis round trip's state (about 2.5 KB).
        Box::pin(async move {
            let inner = &self.inner;
            // A kept answer outlives the client's retry of its connect (the client
            // resends after 1.2 × the timeout at most), and then some.
            let keep = 3 * inner.timeout_ms()?;
            lock(&inner.held).insert(*client);
            let mut invocation = TAKE.key(inner.keys.queue(client));
            invocation.key(inner.keys.answer(client));
            invocation.arg(request.unwrap_or("")).arg(keep);
            let taken: Vec<Vec<u8>> = inner.invoke(&invocation).await?;
            let mut messages = Vec::with_capacity(taken.len());
            for json in taken {
                match delivery(&json) {
                    Some(message) => messages.push(message),
                    None => tracing::warn!(
                        client = client.log_tag(),
                        "dropping a queued message that is not a JSON message object"
                    ),
                }
            }
            Ok(messages)
        })
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        let tasks = std::mem::take(&mut *lock(&inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }
}
