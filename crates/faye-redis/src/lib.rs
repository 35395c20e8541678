//! A Redis engine for faye-rs: several `faye` processes on one Redis behave as one
//! Faye service.
//!
//! Every publish is one `XADD` to a Redis Stream (the bus): the payload is stored
//! once, whatever the number of subscribers or nodes. Each node reads the bus with
//! `XREAD BLOCK` and routes entries to the clients it holds (`Channel::expand` and a
//! map lookup, as the memory engine does). A client's keys (its cursor and its
//! subscriptions) share one hash tag; sessions expire with Redis TTLs and a
//! collector that runs under a lock with an owner token. When a client's
//! connection moves to another node, that node loads the client's cursor and
//! replays the bus from it, so nothing queued is lost on the way.
//!
//! The data model and the Redis commands of every operation are in the
//! repository's `docs/redis.md`. Requires Redis 6.2 or newer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), faye_redis::Error> {
//! use faye_redis::{RedisConfig, RedisEngine};
//! let engine = RedisEngine::connect(RedisConfig::new("redis://127.0.0.1:6379/0")).await?;
//! // let server = faye_server::Server::new(engine, options);
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, EngineEvent,
    EngineStats, Subscribed, generate_client_id,
};
use redis::{RedisError, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod conn;
mod faye_layout;
mod router;
mod scripts;
mod stream;

pub use faye_layout::FayeRedisEngine;

use conn::{Conn, SentinelTarget, Target};
use router::{Answered, Effects, Local, Router};
use stream::{Entry, StreamId, field, tag};

/// The counter the engine increments each time it reads the bus again after
/// Redis was unreachable (a reconnection), through the `metrics` facade.
pub const RECONNECTS_METRIC: &str = "faye_redis_reconnects_total";

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    /// Redis could not be reached, or refused a command at start-up.
    #[error("cannot use Redis: {0}")]
    Redis(#[source] RedisError),
    /// The server is older than the engine needs.
    #[error("Redis {found} is too old: the engine needs 6.2 or newer")]
    Version {
        /// The version the server reported.
        found: String,
    },
    /// The namespace is empty or holds a brace (braces delimit hash tags).
    #[error("invalid namespace {0:?}: it must be non-empty and must not contain braces")]
    Namespace(String),
    /// The faye-redis layout ([`FayeRedisEngine`]) cannot run on this topology.
    #[error("the faye-redis layout cannot run on {0}")]
    Unsupported(&'static str),
}

/// How to reach Redis and how to lay out the engine's keys.
///
/// Three topologies (the repository's `docs/redis.md` has a section on each):
///
/// - one server: [`RedisConfig::new`] with `redis://`, `rediss://` (TLS) or
///   `redis+unix://`;
/// - a master watched by Sentinel: [`RedisConfig::new`] with
///   `redis+sentinel://host:port,host:port/MASTER/DB` (or `rediss+sentinel://`
///   for TLS to the sentinels and the master), or [`RedisConfig::sentinel`];
///   the engine follows a failover by itself;
/// - a Redis Cluster: [`RedisConfig::cluster`] with seed nodes.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    url: String,
    cluster: Option<Vec<String>>,
    ca_cert: Option<Vec<u8>>,
    namespace: String,
    retention: Option<Duration>,
    ring_capacity: usize,
    response_timeout: Duration,
}

impl RedisConfig {
    /// `url`: `redis://[user:password@]host[:port][/db]`, `rediss://...` for TLS
    /// (the server's certificate is checked against the system's roots, or
    /// [`RedisConfig::ca_cert`]), `redis+unix:///path`, or a master behind
    /// Sentinel: `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]`
    /// (sentinels' default port 26379; the credentials and db are the master's;
    /// `rediss+sentinel://` speaks TLS to the sentinels and to the master).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: None,
            ca_cert: None,
            namespace: "faye".into(),
            retention: None,
            ring_capacity: 4096,
            response_timeout: Duration::from_secs(5),
        }
    }

    /// A master behind Sentinel: the sentinels' addresses (`host:port`) and the
    /// name they monitor it by. The same as [`RedisConfig::new`] with
    /// `redis+sentinel://HOST:PORT,.../MASTER`; use that form for credentials,
    /// a database or TLS.
    pub fn sentinel<S: AsRef<str>>(
        sentinels: impl IntoIterator<Item = S>,
        master: impl AsRef<str>,
    ) -> Self {
        let hosts: Vec<String> = sentinels.into_iter().map(|s| s.as_ref().to_owned()).collect();
        Self::new(format!("redis+sentinel://{}/{}", hosts.join(","), master.as_ref()))
    }

    /// A Redis Cluster, found through these seed nodes' URLs (`redis://host:port`
    /// or `rediss://host:port`; one reachable node is enough, the others are
    /// discovered). The engine's keys are laid out so that every script runs in
    /// one slot; the bus is one stream, so one shard takes every publish.
    pub fn cluster<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        let mut config = Self::new(seeds.first().cloned().unwrap_or_default());
        config.cluster = Some(seeds);
        config
    }

    /// A CA certificate (PEM, one or more) to check the server's certificate
    /// against with TLS (`rediss://`), instead of the system's roots: for a Redis
    /// whose certificate is signed by a private CA.
    pub fn ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert = Some(pem.into());
        self
    }

    /// As [`RedisConfig::ca_cert`], read from a PEM file.
    pub fn ca_cert_file(self, path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let pem = std::fs::read(path)?;
        Ok(self.ca_cert(pem))
    }

    fn target(&self) -> Result<Target, Error> {
        if let Some(seeds) = &self.cluster {
            if seeds.is_empty() {
                return Err(Error::Url(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a cluster needs at least one seed URL",
                ))));
            }
            return Ok(Target::Cluster(seeds.clone()));
        }
        match SentinelTarget::parse(&self.url) {
            Some(sentinel) => Ok(Target::Sentinel(sentinel.map_err(Error::Url)?)),
            None => Ok(Target::Standalone(self.url.clone())),
        }
    }

    /// Prefix of every key, so several services can share one Redis. Default
    /// `faye`. Every node of one service must use the same namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long the bus keeps entries: a client whose cursor is older than this
    /// when it moves to another node is told to handshake again. Default 4 × the
    /// server's timeout (a client lives 2 × the timeout after its last connect).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// How many recent bus entries each node keeps in memory to catch up a client
    /// that moves to it without reading Redis. Default 4096.
    pub fn ring_capacity(mut self, entries: usize) -> Self {
        self.ring_capacity = entries.max(1);
        self
    }

    /// How long one Redis command may take before it fails. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
}

/// The Redis engine. Cheap to clone: clones share one engine.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("namespace", &self.inner.keys.ns)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

struct Keys {
    ns: String,
    bus: String,
    clients: String,
    gc_lock: String,
}

impl Keys {
    fn new(ns: &str) -> Self {
        Self {
            ns: ns.to_owned(),
            bus: format!("{ns}:bus"),
            clients: format!("{ns}:clients"),
            gc_lock: format!("{ns}:gc"),
        }
    }

    // The client id in braces is the hash tag: both keys of a client live in one
    // slot, so each script over them runs unchanged on a Redis Cluster.
    fn client(&self, id: &ClientId) -> String {
        format!("{}:client:{{{}}}", self.ns, id.as_str())
    }

    fn subs(&self, id: &ClientId) -> String {
        format!("{}:subs:{{{}}}", self.ns, id.as_str())
    }
}

struct Inner {
    keys: Keys,
    /// This process's name on the bus (random), to tell its own entries apart.
    node: String,
    conn: Conn,
    /// The connection the bus reader blocks on, taken by `start`.
    reader_conn: Mutex<Option<Conn>>,
    retention: Option<Duration>,
    ctx: OnceLock<EngineContext>,
    router: Mutex<Router>,
    /// The newest entry routed, for publishers waiting for their entry.
    routed: watch::Sender<StreamId>,
    /// Publishes to send, in the order `publish` was first polled (see
    /// `send_publishes`), and the receiving end, taken by `start`.
    lane: mpsc::UnboundedSender<Publish>,
    lane_rx: Mutex<Option<mpsc::UnboundedReceiver<Publish>>>,
    /// Held clients whose cursor moved by pushes down a socket, to be recorded
    /// with the next batch of cursor writes (`flush_cursors`).
    dirty: Mutex<HashSet<ClientId>>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by the bus reader while it cannot read Redis: the reader logs the
    /// outage once, and everything else that fails meanwhile stays quiet.
    unreachable: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend(e: RedisError) -> EngineError {
    EngineError::Backend(e.to_string())
}

fn malformed(what: &str) -> EngineError {
    EngineError::Backend(format!("unexpected Redis reply: {what}"))
}

/// Wall-clock milliseconds: scores in the clients index are compared by every
/// node, so they must be absolute (nodes' clocks are assumed roughly in sync).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Entries one bus read returns at most.
const READ_BATCH: usize = 1024;
/// How long the reader blocks in `XREAD` before asking again.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Entries one catch-up `XRANGE` returns at most.
const FETCH_BATCH: usize = 1024;
/// `SET_CURSOR`'s answer when another node owns the client.
const MOVED: i64 = 2;
/// Longest a publish waits for this node to route its own entry.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// Reconnect attempts per round, after the first (see `conn::open`).
const RECONNECT_RETRIES: usize = 2;
/// Expired clients one collector pass handles per round trip.
const GC_BATCH: usize = 100;

impl RedisEngine {
    /// Connects (two connections: commands, and the bus reader), checks the
    /// server's version and loads the scripts. The server starts the engine with
    /// [`Engine::start`].
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        let ns = &config.namespace;
        if ns.is_empty() || ns.contains(['{', '}']) {
            return Err(Error::Namespace(ns.clone()));
        }
        let keys = Keys::new(ns);
        let target = config.target()?;
        let settings = conn::Settings {
            response_timeout: config.response_timeout,
            connection_timeout: config.response_timeout,
            retries: RECONNECT_RETRIES,
            ca_cert: config.ca_cert.clone(),
            bus: keys.bus.clone(),
            master_epoch: Arc::default(),
        };
        let mut conn = conn::open(&target, &settings).await?;
        // The reader's XREAD blocks on purpose: its timeout must outlast the
        // block. Its own connection (on a Cluster, its own connections to the
        // nodes), so that the block holds up no other command.
        let reader_settings =
            conn::Settings { response_timeout: READ_BLOCK + config.response_timeout, ..settings };
        let reader = conn::open(&target, &reader_settings).await?;

        // On a Cluster, INFO is answered by every node (a map): the oldest counts.
        let info: Value =
            redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(Error::Redis)?;
        let version = server_versions(&info)
            .into_iter()
            .min_by_key(|v| version_key(v))
            .unwrap_or_else(|| "unknown".to_owned());
        if version_key(&version) < (6, 2) {
            return Err(Error::Version { found: version });
        }
        load_scripts(&mut conn).await.map_err(Error::Redis)?;
        // Start after the newest entry: what was published before this node
        // existed is replayed per client, from its cursor, when one moves here.
        let newest: Value = redis::cmd("XREVRANGE")
            .arg(&keys.bus)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(Error::Redis)?;
        let start = stream::parse_range(&newest)
            .ok()
            .and_then(|e| e.first().map(|e| e.id))
            .unwrap_or_default();
        let node = rand::random::<[u8; 8]>().iter().map(|b| format!("{b:02x}")).collect();
        let router = Router::new(String::clone(&node), start, config.ring_capacity);
        let (lane, lane_rx) = mpsc::unbounded_channel();
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                node,
                conn,
                reader_conn: Mutex::new(Some(reader)),
                retention: config.retention,
                ctx: OnceLock::new(),
                router: Mutex::new(router),
                routed: watch::channel(start).0,
                lane,
                lane_rx: Mutex::new(Some(lane_rx)),
                dirty: Mutex::new(HashSet::new()),
                cancel: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
                unreachable: AtomicBool::new(false),
            }),
        })
    }

    /// This node's random name on the bus (it appears in logs and bus entries).
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

/// The `redis_version` of each `INFO` text in a reply (one, or one per node).
fn server_versions(info: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    };
    let texts: Vec<String> = match info {
        Value::Map(nodes) => nodes.iter().filter_map(|(_, v)| text(v)).collect(),
        other => text(other).into_iter().collect(),
    };
    texts
        .iter()
        .filter_map(|t| {
            t.lines().find_map(|l| l.strip_prefix("redis_version:")).map(|v| v.trim().to_owned())
        })
        .collect()
}

fn version_key(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

async fn load_scripts(conn: &mut Conn) -> Result<(), RedisError> {
    load(conn, &scripts::all()).await
}

/// Loads `scripts` into Redis's script cache.
async fn load(conn: &mut Conn, scripts: &[&redis::Script]) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    for script in scripts {
        pipe.load_script(script);
    }
    pipe.query_async::<Vec<String>>(conn).await.map(drop)
}

/// Runs a pipeline that invokes some of `scripts`, loading them once if Redis
/// lost them (a restart, or `SCRIPT FLUSH`).
async fn query_scripts<T: redis::FromRedisValue>(
    mut conn: Conn,
    pipe: &redis::Pipeline,
    scripts: &[&redis::Script],
) -> Result<T, EngineError> {
    match pipe.query_async(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            load(&mut conn, scripts).await.map_err(backend)?;
            pipe.query_async(&mut conn).await.map_err(backend)
        }
        other => other.map_err(backend),
    }
}

/// Logs and counts a client destroyed because its queue overflowed.
fn slow_consumer(client: &ClientId) {
    tracing::warn!(
        client = client.log_tag(),
        "queue full: disconnecting a client too slow to keep up"
    );
    metrics::counter!(faye_engine::SLOW_CONSUMERS_METRIC).increment(1);
}

/// What the collector task runs, on either layout.
trait Collect: Send + Sync + 'static {
    /// One collector pass.
    fn collect(&self) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Whether Redis is known to be unreachable (its failures are logged elsewhere).
    fn unreachable(&self) -> bool;
}

/// Runs the collector every `every` for as long as the engine lives.
async fn collect_expired<C: Collect>(inner: Weak<C>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(engine) = inner.upgrade() else {
            return;
        };
        if let Err(e) = engine.collect().await
            && !engine.unreachable()
        {
            tracing::warn!(error = %e, "collecting expired clients failed; will retry");
        }
    }
}

impl Inner {
    fn ctx(&self) -> Result<&EngineContext, EngineError> {
        self.ctx.get().ok_or(EngineError::Shutdown)
    }

    fn lifetime(&self) -> Result<Duration, EngineError> {
        Ok(self.ctx()?.timeout * 2)
    }

    fn retention(&self) -> Duration {
        self.retention
            .unwrap_or_else(|| self.ctx.get().map_or(Duration::from_secs(300), |c| c.timeout * 4))
    }

    fn router(&self) -> MutexGuard<'_, Router> {
        lock(&self.router)
    }

    fn emit(&self, event: EngineEvent) {
        if let Some(ctx) = self.ctx.get() {
            ctx.listener.event(event);
        }
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Whether the bus reader has found Redis unreachable (and said so).
    fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// After an outage: lets go of the held clients whose session Redis no longer
    /// has (a restart without persistence, a failover to a replica that had not
    /// caught up), reporting them closed so that the server closes their
    /// connections and their next connect is told to handshake again. Only
    /// clients held since before the outage began are considered: one created
    /// meanwhile may not have reached Redis yet, and is not lost.
    /// `Err` if Redis could not be asked (the caller tries again later).
    async fn forget_lost_sessions(
        &self,
        outage_began: tokio::time::Instant,
    ) -> Result<(), RedisError> {
        let held: Vec<ClientId> = self
            .router()
            .clients
            .iter()
            .filter(|(_, local)| local.since < outage_began)
            .map(|(id, _)| *id)
            .collect();
        let mut lost = 0usize;
        for batch in held.chunks(GC_BATCH * 10) {
            let mut pipe = redis::pipe();
            for id in batch {
                pipe.cmd("EXISTS").arg(self.keys.client(id));
            }
            // The command connection may learn only now, from this very command,
            // that Redis went away: it reconnects, and a second try goes through.
            let mut tries = 0;
            let exists: Vec<bool> = loop {
                match pipe.query_async(&mut self.conn()).await {
                    Ok(exists) => break exists,
                    Err(e) if tries >= 2 => return Err(e),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            for (id, exists) in batch.iter().zip(exists) {
                if exists {
                    continue;
                }
                let Some(local) = self.router().evict(id) else {
                    continue;
                };
                lost += 1;
                self.report_destroyed(id, local.subs.into_iter().collect());
            }
        }
        if lost > 0 {
            tracing::warn!(
                sessions = lost,
                "Redis lost sessions held on this node (restarted empty?): their clients must handshake again"
            );
        }
        Ok(())
    }

    /// An `XADD` to the bus that also trims entries older than the retention
    /// (approximately: Redis trims whole nodes of the stream, never newer entries).
    fn xadd(&self, fields: &[(&str, &[u8])]) -> redis::Cmd {
        let floor = now_ms().saturating_sub(ms(self.retention()));
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.bus).arg("MINID").arg("~").arg(floor).arg("*");
        for (name, value) in fields {
            cmd.arg(*name).arg(*value);
        }
        cmd
    }

    /// Runs a pipeline that invokes scripts, loading them once if Redis lost them
    /// (a restart, or `SCRIPT FLUSH`).
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, EngineError> {
        query_scripts(self.conn(), pipe, &scripts::all()).await
    }

    /// Routes entries read from the bus, then acts on what routing found.
    async fn route(self: &Arc<Self>, entries: Vec<Entry>) {
        let mut fx = Effects::default();
        let last = {
            let mut router = self.router();
            for entry in entries {
                router.route(Arc::new(entry), &mut fx);
            }
            router.last
        };
        if let Some(ctx) = self.ctx.get() {
            for id in &fx.mail {
                ctx.listener.mail(id);
            }
        }
        for event in fx.events {
            self.emit(event);
        }
        for id in fx.too_slow {
            slow_consumer(&id);
            if let Err(e) = self.destroy(&id).await {
                tracing::error!(client = id.log_tag(), error = %e, "could not destroy a client");
            }
        }
        self.routed.send_replace(last);
    }

    async fn destroy(&self, client: &ClientId) -> Result<(), EngineError> {
        let (ck, sk) = (self.keys.client(client), self.keys.subs(client));
        let channels: Option<Vec<String>> = scripts::DESTROY
            .key(&ck)
            .key(&sk)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        self.router().evict(client);
        let Some(channels) = channels else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(&self.keys.clients).arg(client.as_str()).ignore();
        pipe.add_command(self.destroyed_entry(client, &channels)).ignore();
        let sent = pipe.query_async::<()>(&mut self.conn()).await.map_err(backend);
        self.report_destroyed(client, channels);
        sent
    }

    /// The bus entry saying this node destroyed `client`, with what it was
    /// subscribed to (so that every node can report the unsubscriptions).
    fn destroyed_entry(&self, client: &ClientId, channels: &[String]) -> redis::Cmd {
        self.xadd(&[
            (field::KIND, tag::DESTROYED.as_bytes()),
            (field::CLIENT, client.as_str().as_bytes()),
            (field::NODE, self.node.as_bytes()),
            (field::CHANNEL, channels.join("\n").as_bytes()),
        ])
    }

    fn report_destroyed(&self, client: &ClientId, channels: Vec<String>) {
        for channel in channels {
            self.emit(EngineEvent::Unsubscribe(*client, channel));
        }
        self.emit(EngineEvent::Disconnect(*client));
        self.emit(EngineEvent::Close(*client));
    }

    /// Takes over a client whose connection reached this node: loads its cursor
    /// and subscriptions, announces the takeover (so the node that held it lets
    /// go), and rebuilds its queue from the bus. `false` if the client is gone.
    /// `request`: the long-poll connect asking, if any; if it is the one the client's
    /// last answer went to, that answer was lost, and the queue starts before it.
    async fn adopt(&self, client: &ClientId, request: Option<&str>) -> Result<bool, EngineError> {
        let mut pipe = redis::pipe();
        let mut take = scripts::ADOPT.key(self.keys.client(client));
        take.arg(&self.node);
        pipe.invoke_script(&take);
        pipe.cmd("SMEMBERS").arg(self.keys.subs(client));
        pipe.add_command(self.xadd(&[
            (field::KIND, tag::OWN.as_bytes()),
            (field::CLIENT, client.as_str().as_bytes()),
            (field::NODE, self.node.as_bytes()),
        ]));
        type Recorded = Option<(String, u64, String, String)>;
        let (recorded, subs, owned_at): (Recorded, Vec<String>, String) =
            self.query_pipe(&pipe).await?;
        let Some((cursor, recorded_at, before, answered)) = recorded else {
            return Ok(false);
        };
        let cursor = if request.is_some_and(|r| !answered.is_empty() && r == answered) {
            before
        } else {
            cursor
        };
        let cursor = StreamId::parse(&cursor).ok_or_else(|| malformed("client cursor"))?;
        let owned_at = StreamId::parse(&owned_at).ok_or_else(|| malformed("XADD id"))?;
        let mut snapshot: Option<HashSet<String>> = Some(subs.into_iter().collect());
        // Entries newer than the retention floor are never trimmed. The client had
        // read everything up to its cursor when the cursor was recorded, so what it
        // has not read is newer than that moment (or than the cursor's own entry):
        // only if both are older than the retention (with a margin for clock skew
        // and reader lag) may some of it have been trimmed. A quiet bus leaves the
        // cursor's entry old; the moment it was recorded is what keeps it fresh.
        let retention = ms(self.retention());
        let read_as_of = cursor.ms.max(recorded_at);
        if read_as_of.saturating_add(retention - retention / 4) < now_ms() {
            return self.history_lost(client).await;
        }
        let mut fetched: Vec<Arc<Entry>> = Vec::new();
        let mut from = cursor;
        for _ in 0..10_000 {
            {
                let mut router = self.router();
                if router.clients.contains_key(client) {
                    return Ok(true);
                }
                if let Some(recent) = router.recent_since(from) {
                    let last = router.last;
                    let mut replay: Vec<Arc<Entry>> =
                        fetched.into_iter().filter(|e| e.id <= last).collect();
                    replay.extend(recent);
                    let subs = snapshot.take().unwrap_or_default();
                    return Ok(router.adopt(*client, cursor, subs, owned_at, &replay));
                }
            }
            let reply: Value = redis::cmd("XRANGE")
                .arg(&self.keys.bus)
                .arg(format!("({from}"))
                .arg("+")
                .arg("COUNT")
                .arg(FETCH_BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let entries = stream::parse_range(&reply).map_err(malformed)?;
            // The ring starts after an entry newer than `from` that Redis no
            // longer has: trimmed.
            let Some(newest) = entries.last().map(|e| e.id) else {
                return self.history_lost(client).await;
            };
            from = newest;
            fetched.extend(entries.into_iter().map(Arc::new));
        }
        Err(EngineError::Backend("could not catch up a client's queue".into()))
    }

    /// The bus no longer holds everything the client has not read: its session
    /// ends, so that a Faye client handshakes again instead of silently missing
    /// messages.
    async fn history_lost(&self, client: &ClientId) -> Result<bool, EngineError> {
        tracing::warn!(
            client = client.log_tag(),
            "bus history expired before the client read it: ending its session"
        );
        self.destroy(client).await?;
        Ok(false)
    }

    /// Records the cursors of the clients marked dirty by socket pushes, in
    /// pipelines of up to 1,000 scripts. A client another node took over since
    /// is let go of; on failure the clients are marked again for the next round.
    async fn flush_cursors(&self) {
        let dirty: Vec<ClientId> = std::mem::take(&mut *lock(&self.dirty)).into_iter().collect();
        if dirty.is_empty() {
            return;
        }
        let writes: Vec<(ClientId, StreamId)> = {
            let router = self.router();
            dirty
                .iter()
                .filter_map(|id| router.clients.get(id).map(|l| (*id, l.persisted)))
                .collect()
        };
        for chunk in writes.chunks(GC_BATCH * 10) {
            let now = now_ms();
            let invocations: Vec<_> = chunk
                .iter()
                .map(|(id, cursor)| {
                    let cursor = cursor.to_string();
                    let mut set = scripts::SET_CURSOR.key(self.keys.client(id));
                    set.arg(&cursor).arg(&self.node).arg(now).arg(&cursor).arg("");
                    set
                })
                .collect();
            let mut pipe = redis::pipe();
            for invocation in &invocations {
                pipe.invoke_script(invocation);
            }
            match self.query_pipe::<Vec<i64>>(&pipe).await {
                Ok(results) => {
                    let mut router = self.router();
                    for ((id, _), result) in chunk.iter().zip(results) {
                        if result == MOVED {
                            router.evict(id);
                        }
                    }
                }
                Err(e) => {
                    if !self.unreachable() {
                        tracing::warn!(error = %e, "could not record clients' cursors; will retry");
                    }
                    lock(&self.dirty).extend(chunk.iter().map(|(id, _)| *id));
                }
            }
        }
    }

    /// One collector pass, if this node gets the lock.
    async fn collect(&self) -> Result<(), EngineError> {
        let lifetime = self.lifetime()?;
        let token: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
        let lock_ttl = ms(lifetime).max(1000);
        let got: Option<String> = redis::cmd("SET")
            .arg(&self.keys.gc_lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(lock_ttl)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if got.is_none() {
            return Ok(());
        }
        let result = self.collect_locked().await;
        let _: Result<i64, _> = scripts::UNLOCK
            .key(&self.keys.gc_lock)
            .arg(&token)
            .invoke_async(&mut self.conn())
            .await;
        result
    }

    async fn collect_locked(&self) -> Result<(), EngineError> {
        let lifetime = ms(self.lifetime()?);
        loop {
            let now = now_ms();
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.clients)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(GC_BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let ids: Vec<ClientId> = ids.iter().filter_map(|s| ClientId::parse(s)).collect();
            if ids.is_empty() {
                return Ok(());
            }
            let keys: Vec<(String, String)> =
                ids.iter().map(|id| (self.keys.client(id), self.keys.subs(id))).collect();
            let invocations: Vec<_> = keys
                .iter()
                .map(|(c, s)| {
                    let mut invocation = scripts::REAP.key(c);
                    invocation.key(s);
                    invocation
                })
                .collect();
            let mut pipe = redis::pipe();
            for invocation in &invocations {
                pipe.invoke_script(invocation);
            }
            let replies: Vec<Value> = self.query_pipe(&pipe).await?;
            let mut pipe = redis::pipe();
            let mut dead = Vec::new();
            for (id, reply) in ids.iter().zip(replies) {
                match reply {
                    // Still alive (pinged after the score was written, or on a
                    // node whose clock runs behind): rescore from its real TTL.
                    Value::Int(ttl) => {
                        let ttl = u64::try_from(ttl).unwrap_or(lifetime);
                        pipe.cmd("ZADD")
                            .arg(&self.keys.clients)
                            .arg(now + ttl)
                            .arg(id.as_str())
                            .ignore();
                    }
                    other => {
                        let channels: Vec<String> =
                            redis::from_redis_value(other).map_err(|e| backend(e.into()))?;
                        pipe.cmd("ZREM").arg(&self.keys.clients).arg(id.as_str());
                        dead.push((*id, channels));
                    }
                }
            }
            let removed: Vec<i64> = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
            let mut pipe = redis::pipe();
            let mut reported = false;
            for ((id, channels), removed) in dead.into_iter().zip(removed) {
                if removed == 0 {
                    continue;
                }
                self.router().evict(&id);
                pipe.add_command(self.destroyed_entry(&id, &channels)).ignore();
                self.report_destroyed(&id, channels);
                reported = true;
            }
            if reported {
                pipe.query_async::<()>(&mut self.conn()).await.map_err(backend)?;
            }
            if ids.len() < GC_BATCH {
                return Ok(());
            }
        }
    }
}

/// Reads the bus from where this node left off, for as long as the engine lives.
/// It is also the engine's watch on Redis: a failed read (Redis restarting,
/// stalled or unreachable) is logged once per outage and retried with a backoff;
/// the connection manager reconnects, reading resumes after the last entry
/// routed, and the end of the outage is logged with its length.
async fn read_bus(inner: Weak<Inner>, mut conn: Conn, cancel: CancellationToken) {
    let mut failures = 0u32;
    let mut outage_began = tokio::time::Instant::now();
    // An outage whose lost sessions are still to be looked for.
    let mut unchecked: Option<tokio::time::Instant> = None;
    loop {
        let Some(engine) = inner.upgrade() else {
            return;
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(ms(READ_BLOCK))
            .arg("STREAMS")
            .arg(&engine.keys.bus)
            .arg(engine.router().last.to_string());
        drop(engine);
        let reply = tokio::select! {
            _ = cancel.cancelled() => return,
            reply = cmd.query_async::<Value>(&mut conn) => reply,
        };
        let Some(engine) = inner.upgrade() else {
            return;
        };
        match reply.map_err(backend).and_then(|v| stream::parse_read(&v).map_err(malformed)) {
            Ok(entries) => {
                if failures > 0 {
                    tracing::warn!(
                        after = ?outage_began.elapsed(),
                        "Redis reachable again: reading the bus from where this node left off"
                    );
                    failures = 0;
                    engine.unreachable.store(false, Ordering::Relaxed);
                    metrics::counter!(RECONNECTS_METRIC).increment(1);
                    unchecked = Some(outage_began);
                }
                if let Some(began) = unchecked {
                    match engine.forget_lost_sessions(began).await {
                        Ok(()) => unchecked = None,
                        // Such a client still gets 401 on its next request; only
                        // a connection held here waits for the next try.
                        Err(e) => tracing::warn!(
                            error = %e,
                            "could not check which sessions Redis kept; will try again"
                        ),
                    }
                }
                if !entries.is_empty() {
                    engine.route(entries).await;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    outage_began = tokio::time::Instant::now();
                    engine.unreachable.store(true, Ordering::Relaxed);
                    tracing::error!(
                        error = %e,
                        "cannot read the Redis bus: Redis unreachable? Requests that need it fail \
                         until it is back; retrying"
                    );
                }
                drop(engine);
                let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

/// A publish's `XADD`, and where its entry id goes.
type Publish = (redis::Cmd, oneshot::Sender<Result<String, EngineError>>);

/// Most publishes sent in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// Sends this node's publishes to Redis in the order they were made: whatever is
/// waiting goes out as one pipeline, and the next pipeline only once Redis has
/// answered it. So publishes keep their order on the bus (a client's burst, or a
/// socket's frames, are applied as they were sent) without each waiting for the
/// one before it to come back, and a burst costs a round trip per pipeline
/// rather than per publish.
async fn send_publishes(
    inner: Weak<Inner>,
    mut lane: mpsc::UnboundedReceiver<Publish>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            first = lane.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < PUBLISH_BATCH {
            match lane.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(engine) = inner.upgrade() else {
            return;
        };
        let (commands, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command);
        }
        let mut conn = engine.conn();
        drop(engine);
        match pipe.query_async::<Vec<String>>(&mut conn).await {
            Ok(ids) if ids.len() == senders.len() => {
                for (sender, id) in senders.into_iter().zip(ids) {
                    let _ = sender.send(Ok(id));
                }
            }
            Ok(_) => {
                for sender in senders {
                    let _ = sender.send(Err(malformed("XADD pipeline")));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for sender in senders {
                    let _ = sender.send(Err(EngineError::Backend(e.clone())));
                }
            }
        }
    }
}

/// How often socket pushes' cursors are recorded.
const CURSOR_FLUSH: Duration = Duration::from_millis(50);

/// Records socket pushes' cursors every [`CURSOR_FLUSH`] while the engine lives.
async fn flush_cursors(inner: Weak<Inner>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CURSOR_FLUSH) => {}
        }
        let Some(engine) = inner.upgrade() else {
            return;
        };
        engine.flush_cursors().await;
    }
}

impl Collect for Inner {
    fn collect(&self) -> impl Future<Output = Result<(), EngineError>> + Send {
        Self::collect(self)
    }
    fn unreachable(&self) -> bool {
        Self::unreachable(self)
    }
}

impl Engine for RedisEngine {
    fn start(&self, ctx: EngineContext) {
        let inner = &self.inner;
        inner.router().set_max_queue(ctx.limits.max_queue, ctx.limits.max_queue_bytes);
        // A client expires 2T after its last ping; collecting every T/6 reports it
        // at most a sixth of T late (10 s at most, for long timeouts).
        let every = (ctx.timeout / 6).clamp(Duration::from_millis(10), Duration::from_secs(10));
        if inner.ctx.set(ctx).is_err() {
            return;
        }
        let Some(reader) = lock(&inner.reader_conn).take() else {
            return;
        };
        let Some(lane) = lock(&inner.lane_rx).take() else {
            return;
        };
        let weak = Arc::downgrade(inner);
        let mut tasks = lock(&inner.tasks);
        tasks.push(tokio::spawn(read_bus(weak.clone(), reader, inner.cancel.clone())));
        tasks.push(tokio::spawn(send_publishes(weak.clone(), lane, inner.cancel.clone())));
        tasks.push(tokio::spawn(flush_cursors(weak.clone(), inner.cancel.clone())));
        tasks.push(tokio::spawn(collect_expired(weak, every, inner.cancel.clone())));
    }

    async fn create_client(&self) -> Result<ClientId, EngineError> {
        let inner = &self.inner;
        let lifetime = inner.lifetime()?;
        let id = generate_client_id();
        let cursor = {
            let mut router = inner.router();
            let last = router.last;
            router.insert(id, Local::new(last, HashSet::new(), last));
            last
        };
        let ck = inner.keys.client(&id);
        let created = redis::pipe()
            .cmd("HSET")
            .arg(&ck)
            .arg("cur")
            .arg(cursor.to_string())
            .arg("at")
            .arg(now_ms())
            .arg("own")
            .arg(&inner.node)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&ck)
            .arg(ms(lifetime))
            .ignore()
            .cmd("ZADD")
            .arg(&inner.keys.clients)
            .arg(now_ms() + ms(lifetime))
            .arg(id.as_str())
            .ignore()
            // So that every node reports the handshake.
            .add_command(inner.xadd(&[
                (field::KIND, tag::HANDSHAKE.as_bytes()),
                (field::CLIENT, id.as_str().as_bytes()),
                (field::NODE, inner.node.as_bytes()),
            ]))
            .ignore()
            .query_async::<()>(&mut inner.conn())
            .await;
        if let Err(e) = created {
            inner.router().evict(&id);
            return Err(backend(e));
        }
        inner.emit(EngineEvent::Handshake(id));
        Ok(id)
    }

    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        redis::cmd("EXISTS")
            .arg(self.inner.keys.client(client))
            .query_async(&mut self.inner.conn())
            .await
            .map_err(backend)
    }

    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        self.inner.destroy(client).await
    }

    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        let inner = &self.inner;
        let lifetime = ms(inner.lifetime()?);
        redis::pipe()
            .cmd("PEXPIRE")
            .arg(inner.keys.client(client))
            .arg(lifetime)
            .ignore()
            // The subscription set outlives the client by T, for the collector.
            .cmd("PEXPIRE")
            .arg(inner.keys.subs(client))
            .arg(lifetime + lifetime / 2)
            .ignore()
            .cmd("ZADD")
            .arg(&inner.keys.clients)
            .arg("XX")
            .arg(now_ms() + lifetime)
            .arg(client.as_str())
            .ignore()
            .query_async::<()>(&mut inner.conn())
            .await
            .map_err(backend)
    }

    async fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> Result<Subscribed, EngineError> {
        let inner = &self.inner;
        let ctx = inner.ctx()?;
        let grace = ms(ctx.timeout);
        let outcome: i64 = scripts::SUBSCRIBE
            .key(inner.keys.client(client))
            .key(inner.keys.subs(client))
            .arg(channel.as_str())
            .arg(ctx.limits.max_subscriptions)
            .arg(grace)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        match outcome {
            1 => {}
            3 => return Ok(Subscribed::LimitReached),
            _ => return Ok(Subscribed::Unchanged),
        }
        // Acknowledged only once the bus has it: every node holding the client
        // applies it before any publish that follows the acknowledgement.
        let _: String = inner
            .xadd(&[
                (field::KIND, tag::SUBSCRIBE.as_bytes()),
                (field::CLIENT, client.as_str().as_bytes()),
                (field::CHANNEL, channel.as_str().as_bytes()),
                (field::NODE, inner.node.as_bytes()),
            ])
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        inner.emit(EngineEvent::Subscribe(*client, channel.as_str().to_owned()));
        Ok(Subscribed::Added)
    }

    async fn unsubscribe(&self, client: &ClientId, channel: &Channel) -> Result<bool, EngineError> {
        let inner = &self.inner;
        let removed: i64 = redis::cmd("SREM")
            .arg(inner.keys.subs(client))
            .arg(channel.as_str())
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        if removed == 0 {
            return Ok(false);
        }
        let _: String = inner
            .xadd(&[
                (field::KIND, tag::UNSUBSCRIBE.as_bytes()),
                (field::CLIENT, client.as_str().as_bytes()),
                (field::CHANNEL, channel.as_str().as_bytes()),
                (field::NODE, inner.node.as_bytes()),
            ])
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        inner.emit(EngineEvent::Unsubscribe(*client, channel.as_str().to_owned()));
        Ok(true)
    }

    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        let inner = &self.inner;
        // Into the lane before anything is awaited: the publish's place on the
        // bus is fixed when this future is first polled (see `Engine::publish`).
        let (sent, id) = oneshot::channel();
        let xadd = inner.xadd(&[
            (field::KIND, tag::MESSAGE.as_bytes()),
            (field::CHANNEL, channel.as_str().as_bytes()),
            (field::DATA, message.json()),
        ]);
        inner.lane.send((xadd, sent)).map_err(|_| EngineError::Shutdown)?;
        let id = id.await.map_err(|_| EngineError::Shutdown)??;
        let id = StreamId::parse(&id).ok_or_else(|| malformed("XADD id"))?;
        // Wait until this node has routed its own entry, so that a publish is
        // visible to the clients held here when it returns, as with the memory
        // engine. Redis already has it: if the reader is slow, stop waiting.
        let mut routed = inner.routed.subscribe();
        if tokio::time::timeout(PUBLISH_WAIT, routed.wait_for(|last| *last >= id)).await.is_err()
            && !inner.cancel.is_cancelled()
            && !inner.unreachable()
        {
            tracing::warn!(entry = %id, "the bus reader is behind; publish returns before routing");
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
            let refresh = inner.ctx()?.timeout / 2;
            // A node whose reader has not yet seen another node take the client over
            // still holds it, with a queue the other node has delivered already. The
            // cursor write finds that out (another node owns the client), and the
            // client is taken back, from its real cursor, before anything is handed out.
            for _ in 0..3 {
                let held = inner.router().clients.contains_key(client);
                if !held && !inner.adopt(client, request).await? {
                    return Ok(Vec::new());
                }
                let (messages, record) = {
                    let mut router = inner.router();
                    let last = router.last;
                    let Some(local) = router.clients.get_mut(client) else {
                        return Ok(Vec::new());
                    };
                    let queued = std::mem::take(&mut local.queue);
                    local.queued_bytes = 0;
                    // The same connect asking again did not get its answer: it comes
                    // again, ahead of what is new. Otherwise the client has read up to
                    // the last cursor recorded.
                    let (mut messages, from) = match (local.answered.take(), request) {
                        (Some(answered), Some(r)) if answered.request == r => {
                            (answered.messages, answered.from)
                        }
                        _ => (Vec::new(), local.persisted),
                    };
                    messages.extend(queued);
                    local.cursor = local.cursor.max(last);
                    let answer = request.filter(|_| !messages.is_empty());
                    if let Some(r) = answer {
                        local.answered = Some(Answered {
                            request: r.to_owned(),
                            messages: messages.clone(),
                            from,
                        });
                    }
                    // Record the cursor when messages leave (a next connect on another
                    // node starts after them, or before them if it is the same connect
                    // asking again), and now and then when idle (even if the cursor has
                    // not moved: the moment it is recorded keeps it fresh), so that a
                    // live client's cursor never looks older than the bus's retention.
                    let moved = local.cursor != local.persisted && !messages.is_empty();
                    let write = moved || local.persisted_at.elapsed() >= refresh;
                    if write {
                        local.persisted = local.cursor;
                        local.persisted_at = tokio::time::Instant::now();
                    }
                    let before = if answer.is_some() { from } else { local.cursor };
                    (messages, write.then_some((local.cursor, before, answer.unwrap_or_default())))
                };
                let Some((cursor, before, answered)) = record else {
                    return Ok(messages);
                };
                if request.is_none() {
                    // Pushed down a socket: recorded with the node's next batch of
                    // cursor writes, not one round trip per push. A takeover within
                    // that moment replays what was pushed (twice rather than lost).
                    lock(&inner.dirty).insert(*client);
                    return Ok(messages);
                }
                let mut set = scripts::SET_CURSOR.key(inner.keys.client(client));
                set.arg(cursor.to_string())
                    .arg(&inner.node)
                    .arg(now_ms())
                    .arg(before.to_string())
                    .arg(answered);
                match set.invoke_async::<i64>(&mut inner.conn()).await {
                    Ok(MOVED) => {
                        tracing::debug!(%client, "the client moved to another node: taking it back");
                        inner.router().evict(client);
                    }
                    Ok(_) => return Ok(messages),
                    // The messages are already taken: hand them over. A stale cursor
                    // can only make a later takeover deliver some of them twice.
                    Err(e) => {
                        if !inner.unreachable() {
                            tracing::warn!(client = client.log_tag(), error = %e, "could not record a client's cursor");
                        }
                        return Ok(messages);
                    }
                }
            }
            Err(EngineError::Backend("a client kept moving between nodes".into()))
        })
    }

    /// Channels and queued messages of the clients this node holds.
    fn stats(&self) -> EngineStats {
        let router = self.inner.router();
        let queued: usize = router.clients.values().map(|l| l.queue.len()).sum();
        EngineStats::new(router.channels() as u64, queued as u64)
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        // What was pushed is recorded, so that a client moving to another node
        // is not given it again.
        inner.flush_cursors().await;
        inner.cancel.cancel();
        let tasks = std::mem::take(&mut *lock(&inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }
}
