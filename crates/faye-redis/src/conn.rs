//! The connection layer: one [`Conn`] for the three topologies the engine runs
//! on, so that the rest of the engine sends commands and pipelines the same way
//! whatever the topology.
//!
//! - **Standalone** (`redis://`, `rediss://`, `redis+unix://`): the `redis`
//!   crate's `ConnectionManager`, which reconnects to the one address it has.
//! - **Sentinel** (`redis+sentinel://`, `rediss+sentinel://`): [`Failover`] asks
//!   the sentinels for the current master, and asks again (and reconnects) when a
//!   command fails in a way that means the master moved: the connection dropped
//!   or was refused, a timeout, or `READONLY` (the old master came back as a
//!   replica).
//! - **Cluster**: the crate's cluster connection, which routes each command to
//!   the node owning its key's slot. A pipeline whose commands live in several
//!   slots (the crate refuses those) is split per slot by [`Cluster`]; see there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Arg, AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use crate::{Error, lock};

/// Where Redis is, parsed from a [`crate::RedisConfig`].
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One server: a `redis://`, `rediss://` or `redis+unix://` URL.
    Standalone(String),
    /// A master found through sentinels.
    Sentinel(SentinelTarget),
    /// Seed nodes of a Redis Cluster (URLs).
    Cluster(Vec<String>),
}

/// `redis[s]+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelTarget {
    pub(crate) sentinels: Vec<(String, u16)>,
    pub(crate) master: String,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) tls: bool,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// The port sentinels listen on by default.
const SENTINEL_PORT: u16 = 26379;

fn invalid(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what, detail))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl SentinelTarget {
    /// Parses a sentinel URL; `None` if `url` is not one (another scheme).
    pub(crate) fn parse(url: &str) -> Option<Result<Self, RedisError>> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, rest)
        } else {
            (true, url.strip_prefix("rediss+sentinel://")?)
        };
        Some(Self::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> Result<Self, RedisError> {
        let bad = |detail: &str| {
            invalid(
                "invalid sentinel URL (redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db])",
                detail.to_owned(),
            )
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, authority),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((user, password)) => (
                    Some(percent_decode(user)).filter(|u| !u.is_empty()),
                    Some(percent_decode(password)),
                ),
                None => (Some(percent_decode(c)), None),
            },
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(bad("an empty sentinel address"));
            }
            // `[::1]:26379`, `host:26379`, or a host alone.
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) if !port.contains(']') => {
                    let port = port.parse::<u16>().map_err(|_| bad("a port is not a number"))?;
                    (name, port)
                }
                _ => (host, SENTINEL_PORT),
            };
            let name = name.trim_start_matches('[').trim_end_matches(']');
            sentinels.push((name.to_owned(), port));
        }
        let mut parts = path.trim_end_matches('/').splitn(2, '/');
        let master = percent_decode(parts.next().unwrap_or_default());
        if master.is_empty() {
            return Err(bad("no master name"));
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db.parse().map_err(|_| bad("the database is not a number"))?,
        };
        Ok(Self { sentinels, master, db, username, password, tls })
    }
}

/// A connection to Redis, whatever the topology. Cheap to clone: clones share
/// the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(ConnectionManager),
    Sentinel(Failover),
    Cluster(Cluster),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.command(cmd).boxed(),
            Self::Cluster(c) => c.conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.pipeline(pipeline, offset, count).boxed(),
            Self::Cluster(c) => c.pipeline(pipeline, offset, count).boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Sentinel(c) => c.shared.db,
            Self::Cluster(_) => 0,
        }
    }
}

/// How a connection is set up: the engine opens two, one for commands and one
/// for the bus reader, whose blocking `XREAD` needs a longer response timeout.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) response_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    /// Reconnect attempts per round, after the first (standalone).
    pub(crate) retries: usize,
    /// A CA certificate (PEM) to trust instead of the system's roots (TLS).
    pub(crate) ca_cert: Option<Vec<u8>>,
    /// The bus key: on a Cluster, a pipeline's write to the bus is sent after the
    /// rest of the pipeline (see [`Cluster`]).
    pub(crate) bus: String,
    /// Shared by the connections of one engine behind Sentinel: when one finds
    /// that the master may have moved, the others look it up again too (see
    /// [`Failover`]).
    pub(crate) master_epoch: Arc<AtomicU64>,
}

impl Settings {
    fn certificates(&self) -> Option<TlsCertificates> {
        self.ca_cert
            .as_ref()
            .map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) })
    }
}

/// Opens a connection to `target`.
pub(crate) async fn open(target: &Target, settings: &Settings) -> Result<Conn, Error> {
    match target {
        Target::Standalone(url) => {
            let client = match settings.certificates() {
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(Error::Url)?;
            // Every request waits for a reconnection in progress, and the
            // manager's default (6 retries, backing off to 3.2 s) would hold each
            // request for ~6 s while Redis is down. Two quick retries make
            // requests fail fast; the next request (the bus reader asks at least
            // every 2 s) starts another round, so reconnecting goes on for as
            // long as the outage lasts.
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(settings.response_timeout))
                .set_connection_timeout(Some(settings.connection_timeout))
                .set_number_of_retries(settings.retries)
                .set_max_delay(Duration::from_millis(400));
            let manager =
                ConnectionManager::new_with_config(client, config).await.map_err(Error::Redis)?;
            Ok(Conn::Standalone(manager))
        }
        Target::Sentinel(target) => {
            let failover = Failover::new(target, settings).map_err(Error::Url)?;
            // Fail at start-up, not on the first request, if no master is found.
            failover.connection().await.map_err(Error::Redis)?;
            Ok(Conn::Sentinel(failover))
        }
        Target::Cluster(urls) => {
            let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .response_timeout(settings.response_timeout)
                .connection_timeout(settings.connection_timeout)
                .retries(settings.retries.try_into().unwrap_or(u32::MAX).max(1));
            if let Some(certs) = settings.certificates() {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(Error::Url)?;
            let conn = client.get_async_connection().await.map_err(Error::Redis)?;
            Ok(Conn::Cluster(Cluster { conn, bus: Slot::for_key(&settings.bus) }))
        }
    }
}

/// Whether a failed command means the master may have moved: ask the sentinels
/// again. Also true of an outage of a master that did not move (it costs one
/// lookup and a fresh connection).
fn master_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || is_readonly(e.kind())
        || e.code() == Some("MASTERDOWN")
}

fn is_readonly(kind: ErrorKind) -> bool {
    kind == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// A connection to the master a set of sentinels names, which follows a failover
/// by itself: after a command failed because the master moved (see
/// [`master_moved`]), the next command asks the sentinels for the master again
/// and connects to it. The failed command's error is returned as it is: the
/// engine never resends a command (a publish that reached Redis must not be
/// written twice), and its callers already treat a failure as a failure.
///
/// The engine's two connections share an epoch that such a failure moves on:
/// the bus reader, always waiting in `XREAD`, sees a crashed master at once, and
/// the command connection then looks the master up before its next command
/// rather than failing it on the dead connection first.
#[derive(Clone)]
pub(crate) struct Failover {
    shared: Arc<FailoverShared>,
}

struct FailoverShared {
    /// Held while asking the sentinels, so that concurrent requests wait for one
    /// lookup rather than each making its own.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    /// Bound on one lookup plus connecting.
    timeout: Duration,
    db: i64,
    /// The master's connection, with a generation number (a failure clears it
    /// only if it is still the one that failed) and the master epoch it was made
    /// in (a later epoch means another connection found the master gone).
    current: Mutex<Option<Current>>,
    generation: AtomicU64,
    epoch: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    epoch: u64,
    conn: MultiplexedConnection,
}

impl Failover {
    fn new(target: &SentinelTarget, settings: &Settings) -> Result<Self, RedisError> {
        let addrs = target.sentinels.iter().map(|(host, port)| {
            if target.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut builder =
            SentinelClientBuilder::new(addrs, &target.master, SentinelServerType::Master)?
                .set_client_to_redis_db(target.db);
        if let Some(user) = &target.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &target.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if target.tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = settings.certificates() {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs);
            }
        } else if settings.ca_cert.is_some() {
            return Err(invalid(
                "a CA certificate needs TLS",
                "use rediss+sentinel:// with a CA certificate".into(),
            ));
        }
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(settings.response_timeout))
            .set_connection_timeout(Some(settings.connection_timeout));
        Ok(Self {
            shared: Arc::new(FailoverShared {
                sentinel: tokio::sync::Mutex::new(builder.build()?),
                config,
                timeout: settings.connection_timeout * 2,
                db: target.db,
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                epoch: settings.master_epoch.clone(),
            }),
        })
    }

    /// The master's connection: the current one, or a new one to the master the
    /// sentinels name now.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let shared = &self.shared;
        let valid = || {
            let epoch = shared.epoch.load(Ordering::Relaxed);
            lock(&shared.current)
                .as_ref()
                .filter(|c| c.epoch == epoch)
                .map(|c| (c.generation, c.conn.clone()))
        };
        if let Some(current) = valid() {
            return Ok(current);
        }
        let mut sentinel = shared.sentinel.lock().await;
        if let Some(current) = valid() {
            return Ok(current);
        }
        let epoch = shared.epoch.load(Ordering::Relaxed);
        let lookup = async {
            // Connects to the master the sentinels name and checks that it says
            // it is one (`ROLE`).
            let client = sentinel.async_get_client().await?;
            let addr = client.get_connection_info().addr().to_string();
            let conn = client.get_multiplexed_async_connection_with_config(&shared.config).await?;
            Ok::<_, RedisError>((addr, conn))
        };
        let (addr, conn) = tokio::time::timeout(shared.timeout, lookup).await.map_err(|_| {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no master found through the sentinels in time",
            ))
        })??;
        let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if generation > 1 {
            tracing::warn!(master = %addr, "connected to the master the sentinels name now");
        } else {
            tracing::debug!(master = %addr, "connected to the master the sentinels name");
        }
        *lock(&shared.current) = Some(Current { generation, epoch, conn: conn.clone() });
        Ok((generation, conn))
    }

    /// Forgets the connection `generation` (if it is still the current one) and
    /// tells the engine's other connection to look the master up again.
    fn forget(&self, generation: u64) {
        let mut current = lock(&self.shared.current);
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
            self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After a failure of the connection `generation`: forget it if the master
    /// may have moved, so that the next command looks the master up again.
    fn failed(&self, generation: u64, e: &RedisError) {
        if !master_moved(e) {
            return;
        }
        tracing::debug!(error = %e, "the master may have moved: asking the sentinels again");
        self.forget(generation);
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.connection().await?;
        let reply = conn.req_packed_command(cmd).await;
        match &reply {
            Err(e) => self.failed(generation, e),
            Ok(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::ReadOnly) => {
                self.forget(generation);
            }
            Ok(_) => {}
        }
        reply
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.connection().await?;
        let reply = conn.req_packed_commands(pipeline, offset, count).await;
        match &reply {
            Err(e) => self.failed(generation, e),
            Ok(values) => {
                let readonly = values.iter().any(
                    |v| matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly)),
                );
                if readonly {
                    self.forget(generation);
                }
            }
        }
        reply
    }
}

/// A Redis Cluster connection that also takes pipelines spanning several slots.
///
/// The `redis` crate sends a pipeline to the node of its first keyed command and
/// refuses one whose keys live in several slots (`CROSSSLOT`). The engine's
/// pipelines are grouped by what they do, not by slot (a client's keys and the
/// clients index; expired clients' keys, one slot each), so this splits such a
/// pipeline into one pipeline per slot, sends them concurrently and puts the
/// replies back in order. Commands without a key (`SCRIPT LOAD`) go alone, routed
/// by the crate (`SCRIPT LOAD` to every master). One exception to concurrency:
/// a write to the bus is an announcement of the rest of the pipeline (a
/// takeover, a destruction), so the bus's part is sent once the other parts have
/// answered, as a standalone Redis would run them in order.
#[derive(Clone)]
pub(crate) struct Cluster {
    conn: ClusterConnection,
    bus: Slot,
}

/// The slot of a command's key; `None` for a command without one.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(a) => Some(a),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            args.get(3)?
        }
        b"XREAD" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        b"SCRIPT" | b"INFO" | b"PING" | b"CLUSTER" => return None,
        _ => args.get(1)?,
    };
    Some(Slot::for_key(key))
}

impl Cluster {
    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
        // One part per slot, in order of first appearance; each keyless command
        // is a part of its own.
        let mut parts: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
        let mut by_slot: HashMap<Slot, usize> = HashMap::new();
        for (i, cmd) in cmds.iter().enumerate() {
            match slot_of(cmd) {
                Some(slot) => match by_slot.get(&slot) {
                    Some(&part) => parts[part].1.push(i),
                    None => {
                        by_slot.insert(slot, parts.len());
                        parts.push((Some(slot), vec![i]));
                    }
                },
                None => parts.push((None, vec![i])),
            }
        }
        // A transaction (MULTI/EXEC: offset and count are not the whole
        // pipeline), or one slot: the crate's routing does.
        let whole = offset == 0 && count == cmds.len();
        if !whole || (parts.len() == 1 && parts[0].0.is_some()) {
            let mut conn = self.conn.clone();
            return conn.req_packed_commands(pipeline, offset, count).await;
        }
        let run = |indices: Vec<usize>, keyless: bool| {
            let mut conn = self.conn.clone();
            let cmds = &cmds;
            async move {
                let values = if keyless {
                    vec![conn.req_packed_command(cmds[indices[0]]).await?]
                } else {
                    let mut part = redis::pipe();
                    for &i in &indices {
                        part.add_command(cmds[i].clone());
                    }
                    conn.req_packed_commands(&part, 0, indices.len()).await?
                };
                Ok::<_, RedisError>((indices, values))
            }
        };
        let (bus, rest): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|(slot, _)| *slot == Some(self.bus));
        let mut replies = futures_util::future::join_all(
            rest.into_iter().map(|(slot, indices)| run(indices, slot.is_none())),
        )
        .await;
        if let Some((_, indices)) = bus.into_iter().next()
            && replies.iter().all(Result::is_ok)
        {
            replies.push(run(indices, false).await);
        }
        let mut out = vec![Value::Nil; cmds.len()];
        for reply in replies {
            let (indices, values) = reply?;
            if values.len() != indices.len() {
                return Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "a pipeline part's reply has the wrong length",
                )));
            }
            for (i, value) in indices.into_iter().zip(values) {
                out[i] = value;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let t =
            SentinelTarget::parse("redis+sentinel://a:1,b,[::1]:3/mymaster/2").unwrap().unwrap();
        assert_eq!(
            t.sentinels,
            vec![("a".into(), 1), ("b".into(), SENTINEL_PORT), ("::1".into(), 3)]
        );
        assert_eq!((t.master.as_str(), t.db, t.tls), ("mymaster", 2, false));
        assert_eq!((t.username, t.password), (None, None));

        let t = SentinelTarget::parse("rediss+sentinel://u:p%40ss@h/m").unwrap().unwrap();
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("u"), Some("p@ss")));
        assert_eq!((t.master.as_str(), t.db, t.tls), ("m", 0, true));
        let t = SentinelTarget::parse("redis+sentinel://:secret@h:5/m/").unwrap().unwrap();
        assert_eq!((t.username, t.password.as_deref(), t.db), (None, Some("secret"), 0));

        assert!(SentinelTarget::parse("redis://h/0").is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h,,i/m",
            "redis+sentinel://h/m/zero",
        ] {
            assert!(SentinelTarget::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_of_the_engines_commands() {
        let tagged = Slot::for_key("{abc}");
        let mut c = redis::cmd("HSET");
        c.arg("ns:client:{abc}").arg("cur").arg("0-0");
        assert_eq!(slot_of(&c), Some(tagged));
        let mut c = redis::cmd("EVALSHA");
        c.arg("deadbeef").arg(2).arg("ns:client:{abc}").arg("ns:subs:{abc}").arg("x");
        assert_eq!(slot_of(&c), Some(tagged));
        let mut c = redis::cmd("EVALSHA");
        c.arg("deadbeef").arg(0).arg("x");
        assert_eq!(slot_of(&c), None);
        let mut c = redis::cmd("XREAD");
        c.arg("COUNT").arg(1).arg("BLOCK").arg(1).arg("STREAMS").arg("ns:bus").arg("0-0");
        assert_eq!(slot_of(&c), Some(Slot::for_key("ns:bus")));
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg("return 1");
        assert_eq!(slot_of(&c), None);
    }
}
