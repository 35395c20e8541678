//! `faye`: run a Faye-compatible Bayeux server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use faye_engine::{Engine, MemoryEngine};
use faye_http::{FayeOptions, FayeService};
use faye_redis::{RedisConfig, RedisEngine};
use faye_server::{Server, ServerOptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "faye", version, about = "A Faye-compatible Bayeux pub/sub server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (memory engine, or Redis to run several processes as one).
    Serve(Box<ServeArgs>),
    /// Load a Bayeux server on this machine and report throughput, latency, loss,
    /// memory and CPU (the same as the `faye-bench` binary).
    Bench(Box<faye_bench::Cli>),
}

#[derive(Parser)]
struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = "FAYE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 lets the system choose (the chosen one is printed).
    #[arg(long, env = "FAYE_PORT", default_value_t = 8000)]
    port: u16,
    /// Path the Bayeux endpoint is served under.
    #[arg(long, env = "FAYE_MOUNT", default_value = "/bayeux")]
    mount: String,
    /// Seconds a /meta/connect is held open; clients expire after twice this.
    #[arg(long, env = "FAYE_TIMEOUT", default_value_t = 60.0)]
    timeout: f64,
    /// Seconds between WebSocket pings (none by default).
    #[arg(long, env = "FAYE_PING")]
    ping: Option<f64>,
    /// Largest request body or WebSocket message, in bytes.
    #[arg(long, env = "FAYE_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    max_request_bytes: usize,
    /// A browser client to serve at MOUNT/client.js and MOUNT.js, e.g. npm faye's
    /// client/faye-browser-min.js.
    #[arg(long, env = "FAYE_CLIENT_JS")]
    client_js: Option<std::path::PathBuf>,
    /// Origins whose pages may use the server, comma-separated (default: any, as
    /// Faye): others get no CORS headers, and 403 for WebSocket, EventSource and
    /// JSON-P. List this server's own origin too.
    #[arg(long, env = "FAYE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Most channels one client may subscribe to.
    #[arg(long, env = "FAYE_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    max_subscriptions: usize,
    /// Most messages queued for one client; a client too slow to drain its queue is
    /// disconnected.
    #[arg(long, env = "FAYE_MAX_QUEUE", default_value_t = 100_000)]
    max_queue: usize,
    /// Most bytes of messages queued for one client; past it, as past --max-queue.
    #[arg(long, env = "FAYE_MAX_QUEUE_BYTES", default_value_t = 16 << 20)]
    max_queue_bytes: usize,
    /// Most live clients (sessions); past it handshakes are refused with
    /// `503::Too many clients`.
    #[arg(long, env = "FAYE_MAX_CLIENTS", default_value_t = 100_000)]
    max_clients: usize,
    /// Most clients one request or WebSocket frame may create (Faye's clients send
    /// one handshake per request).
    #[arg(long, env = "FAYE_MAX_HANDSHAKES_PER_REQUEST", default_value_t = 1)]
    max_handshakes_per_request: usize,
    /// Most messages in one request.
    #[arg(long, env = "FAYE_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Seconds a client's message may wait for one it sent earlier that has not
    /// arrived yet (its messages are applied in the order it numbered them); 0
    /// applies messages as they arrive.
    #[arg(long, env = "FAYE_ORDER_WAIT", default_value_t = 0.5)]
    order_wait: f64,
    /// Most publishes per second per client (default: no limit); past it a publish
    /// gets `429:<channel>:Too many publishes`. Publishes naming no client of this
    /// server share one allowance.
    #[arg(long, env = "FAYE_MAX_PUBLISHES_PER_SECOND")]
    max_publishes_per_second: Option<u32>,
    /// Most bytes of published messages per second per client (default: no limit).
    #[arg(long, env = "FAYE_MAX_PUBLISH_BYTES_PER_SECOND")]
    max_publish_bytes_per_second: Option<u64>,
    /// Seconds a write may wait for a peer that reads nothing; then the connection
    /// is closed.
    #[arg(long, env = "FAYE_WRITE_TIMEOUT", default_value_t = 30.0)]
    write_timeout: f64,
    /// Also speak cleartext HTTP/2 (h2c); off by default, as Faye's clients and
    /// browsers use HTTP/1.1 on a cleartext port.
    #[arg(long, env = "FAYE_HTTP2", value_parser = clap::builder::BoolishValueParser::new())]
    http2: bool,
    /// Negotiate WebSocket permessage-deflate compression with clients that offer it.
    #[arg(long, env = "FAYE_WEBSOCKET_DEFLATE", value_parser = clap::builder::BoolishValueParser::new())]
    websocket_deflate: bool,
    /// Where clients, subscriptions and queues live: this process's memory, or a
    /// Redis shared by several `faye serve` processes that act as one service.
    #[arg(long, env = "FAYE_ENGINE", value_enum, default_value_t = EngineKind::Memory)]
    engine: EngineKind,
    /// The Redis of `--engine redis` (6.2 or newer), as redis://host:port/db, with
    /// credentials as redis://user:password@host:port/db; rediss://... for TLS; a
    /// master behind Sentinel as redis+sentinel://host:port,host:port/MASTER/db.
    /// With --redis-cluster: the cluster's seed nodes, repeated or comma-separated.
    #[arg(long, env = "FAYE_REDIS_URL")]
    redis_url: Vec<String>,
    /// --redis-url names seed nodes of a Redis Cluster.
    #[arg(long, env = "FAYE_REDIS_CLUSTER", value_parser = clap::builder::BoolishValueParser::new())]
    redis_cluster: bool,
    /// A CA certificate (PEM file) to check the Redis server's TLS certificate
    /// against, instead of the system's roots (with rediss:// URLs).
    #[arg(long, env = "FAYE_REDIS_CA_CERT", value_name = "FILE")]
    redis_ca_cert: Option<std::path::PathBuf>,
    /// Prefix of the engine's Redis keys; every node of one service uses the same.
    #[arg(long, env = "FAYE_REDIS_NAMESPACE", default_value = "faye")]
    redis_namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// One process (Faye's default).
    Memory,
    /// Several processes on one Redis.
    Redis,
}

/// The longest `--timeout` or `--ping`: a day. Far longer ones overflow the clock
/// (a client expires 2 × timeout after its last connect), and browsers' timers
/// cannot wait past 24.8 days anyway.
const MAX_SECONDS: f64 = 86_400.0;

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    if value > MAX_SECONDS {
        anyhow::bail!("--{what} must be at most {MAX_SECONDS} seconds (one day), not {value}");
    }
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{what} must be a positive number of seconds"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Bench(cli) => faye_bench::main(*cli).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    match args.engine {
        EngineKind::Memory => serve_with(MemoryEngine::new(), "memory", args).await,
        EngineKind::Redis => {
            let config = redis_config(&args)?;
            let engine =
                RedisEngine::connect(config).await.context("cannot start the Redis engine")?;
            tracing::info!(node = engine.node(), namespace = %args.redis_namespace, "connected to Redis");
            serve_with(engine, "redis", args).await
        }
    }
}

/// The Redis engine's settings from `--redis-*`.
fn redis_config(args: &ServeArgs) -> anyhow::Result<RedisConfig> {
    let mut config = if args.redis_cluster {
        // Seeds repeated or comma-separated (a sentinel URL, which has commas,
        // is not a cluster seed).
        let seeds: Vec<String> = args
            .redis_url
            .iter()
            .flat_map(|u| u.split(','))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if seeds.is_empty() {
            anyhow::bail!("--redis-cluster needs at least one --redis-url (or FAYE_REDIS_URL)");
        }
        RedisConfig::cluster(seeds)
    } else {
        match args.redis_url.as_slice() {
            [] => anyhow::bail!("--engine redis needs --redis-url (or FAYE_REDIS_URL)"),
            [url] => RedisConfig::new(url),
            _ => anyhow::bail!(
                "several --redis-url given: only a cluster (--redis-cluster) takes several"
            ),
        }
    };
    if let Some(path) = &args.redis_ca_cert {
        config = config
            .ca_cert_file(path)
            .with_context(|| format!("cannot read --redis-ca-cert {}", path.display()))?;
    }
    Ok(config.namespace(args.redis_namespace.clone()))
}

/// `Server` is generic over its engine: the engine is picked here, at start-up.
async fn serve_with<E: Engine>(engine: E, kind: &str, args: ServeArgs) -> anyhow::Result<()> {
    let timeout = seconds(args.timeout, "timeout")?;
    let ping = args.ping.map(|p| seconds(p, "ping")).transpose()?;
    let server_options = ServerOptions::default()
        .timeout(timeout)
        .order_wait(seconds(args.order_wait, "order-wait")?)
        .max_subscriptions_per_client(args.max_subscriptions)
        .max_queue_per_client(args.max_queue)
        .max_queue_bytes_per_client(args.max_queue_bytes)
        .max_clients(args.max_clients)
        .max_handshakes_per_request(args.max_handshakes_per_request)
        .max_publishes_per_second(args.max_publishes_per_second)
        .max_publish_bytes_per_second(args.max_publish_bytes_per_second);
    let server = Server::new(engine, server_options);
    let mut options = FayeOptions::default()
        .mount(args.mount)
        .allowed_origins(args.allowed_origins)
        .ping(ping)
        .max_request_bytes(args.max_request_bytes)
        .max_batch(args.max_batch)
        .write_timeout(seconds(args.write_timeout, "write-timeout")?)
        .http2(args.http2)
        .websocket_deflate(args.websocket_deflate);
    if let Some(path) = &args.client_js {
        let script =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        options = options.client_script(script);
    }
    let mount = options.get_mount().to_owned();
    let faye = FayeService::new(server, options);

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let local: SocketAddr = listener.local_addr()?;
    // The one line on stdout: scripts and tests read the chosen port from it.
    println!("faye-rs listening on http://{local}{mount}");
    tracing::info!(%local, %mount, ?timeout, engine = kind, "serving");

    faye_http::serve(listener, faye, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
