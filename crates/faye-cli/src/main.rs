//! `faye`: run a Faye-compatible Bayeux server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};
use faye_engine::{Engine, MemoryEngine};
use faye_http::{FayeOptions, FayeService, ServeOptions};
use faye_redis::{FayeRedisEngine, RedisConfig, RedisEngine};
use faye_server::{Server, ServerOptions};
use tracing_subscriber::EnvFilter;

mod config;
mod ops;
mod pubsub;
mod tls;
use config::{EngineKind, LogFormat, RedisLayout, Settings};

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
    /// Print a config file for `faye serve --config` with every setting, its
    /// documentation and its default.
    Config,
    /// Subscribe to channels of any Faye or Bayeux server and print each message
    /// as one JSON line, {"channel":...,"data":...}. Exit codes: 0 done, 1 bad
    /// input, 2 bad usage, 3 timed out, 4 refused by the server, 5 disconnected.
    Subscribe(Box<pubsub::SubscribeArgs>),
    /// Publish one message, or one per line of standard input, to a channel of
    /// any Faye or Bayeux server, in order. Exit codes as for subscribe.
    Publish(Box<pubsub::PublishArgs>),
}

/// `faye serve`'s flags. None has a default here: a flag (or its `FAYE_*`
/// variable) given wins over the config file, which wins over the defaults of
/// [`Settings`] (`faye config` prints them).
#[derive(Parser)]
struct ServeArgs {
    /// A TOML file of settings (`faye config` prints one with every key and its
    /// default); the environment and flags override it.
    #[arg(long, env = "FAYE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect (defaults, file, environment and flags
    /// together) as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on (default 127.0.0.1). Use 0.0.0.0 to accept connections
    /// from other machines.
    #[arg(long, env = "FAYE_HOST")]
    host: Option<String>,
    /// Port to listen on (default 8000); 0 lets the system choose (the chosen one is
    /// printed).
    #[arg(long, env = "FAYE_PORT")]
    port: Option<u16>,
    /// Path the Bayeux endpoint is served under (default /bayeux).
    #[arg(long, env = "FAYE_MOUNT")]
    mount: Option<String>,
    /// Seconds a /meta/connect is held open (default 60); clients expire after
    /// twice this.
    #[arg(long, env = "FAYE_TIMEOUT")]
    timeout: Option<f64>,
    /// Seconds between WebSocket pings (none by default).
    #[arg(long, env = "FAYE_PING")]
    ping: Option<f64>,
    /// Largest request body or WebSocket message, in bytes (default 1 MiB).
    #[arg(long, env = "FAYE_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Another browser client to serve at MOUNT/client.js and MOUNT.js instead of
    /// faye-rs's own (served by default), e.g. npm faye's
    /// client/faye-browser-min.js.
    #[arg(long, env = "FAYE_CLIENT_JS")]
    client_js: Option<PathBuf>,
    /// Serve a live status page at /status (linked from the page at /): clients by
    /// connection type, channels and their subscriber counts, messages per second.
    /// Anyone who can reach the server can see it (off by default).
    #[arg(long, env = "FAYE_STATUS_PAGE", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    status_page: Option<bool>,
    /// Origins whose pages may use the server, comma-separated (default: any, as
    /// Faye): others get no CORS headers, and 403 for WebSocket, EventSource and
    /// JSON-P. List this server's own origin too.
    #[arg(long, env = "FAYE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Most channels one client may subscribe to (default 1000).
    #[arg(long, env = "FAYE_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// Most messages queued for one client (default 100000); a client too slow to
    /// drain its queue is disconnected.
    #[arg(long, env = "FAYE_MAX_QUEUE")]
    max_queue: Option<usize>,
    /// Most bytes of messages queued for one client (default 16 MiB); past it, as
    /// past --max-queue.
    #[arg(long, env = "FAYE_MAX_QUEUE_BYTES")]
    max_queue_bytes: Option<usize>,
    /// Most live clients (sessions) (default 100000); past it handshakes are refused
    /// with `503::Too many clients`.
    #[arg(long, env = "FAYE_MAX_CLIENTS")]
    max_clients: Option<usize>,
    /// Most clients one request or WebSocket frame may create (default 1: Faye's
    /// clients send one handshake per request).
    #[arg(long, env = "FAYE_MAX_HANDSHAKES_PER_REQUEST")]
    max_handshakes_per_request: Option<usize>,
    /// Most messages in one request (default 1000).
    #[arg(long, env = "FAYE_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Seconds a client's message may wait for one it sent earlier that has not
    /// arrived yet (default 0.5; its messages are applied in the order it numbered
    /// them); 0 applies messages as they arrive.
    #[arg(long, env = "FAYE_ORDER_WAIT")]
    order_wait: Option<f64>,
    /// Most publishes per second per client (default: no limit); past it a publish
    /// gets `429:<channel>:Too many publishes`. Publishes naming no client of this
    /// server share one allowance.
    #[arg(long, env = "FAYE_MAX_PUBLISHES_PER_SECOND")]
    max_publishes_per_second: Option<u32>,
    /// Most bytes of published messages per second per client (default: no limit).
    #[arg(long, env = "FAYE_MAX_PUBLISH_BYTES_PER_SECOND")]
    max_publish_bytes_per_second: Option<u64>,
    /// Seconds a write may wait for a peer that reads nothing (default 30); then the
    /// connection is closed.
    #[arg(long, env = "FAYE_WRITE_TIMEOUT")]
    write_timeout: Option<f64>,
    /// Also speak cleartext HTTP/2 (h2c); off by default, as Faye's clients and
    /// browsers use HTTP/1.1 on a cleartext port.
    #[arg(long, env = "FAYE_HTTP2", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    http2: Option<bool>,
    /// Negotiate WebSocket permessage-deflate compression with clients that offer it.
    #[arg(long, env = "FAYE_WEBSOCKET_DEFLATE", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    websocket_deflate: Option<bool>,
    /// Where clients, subscriptions and queues live (default memory): this
    /// process's memory, or a Redis shared by several `faye serve` processes that
    /// act as one service.
    #[arg(long, env = "FAYE_ENGINE", value_enum)]
    engine: Option<EngineKind>,
    /// The Redis of `--engine redis` (6.2 or newer), as redis://host:port/db, with
    /// credentials as redis://user:password@host:port/db; rediss://... for TLS; a
    /// master behind Sentinel as redis+sentinel://host:port,host:port/MASTER/db.
    /// With --redis-cluster: the cluster's seed nodes, repeated or comma-separated.
    #[arg(long, env = "FAYE_REDIS_URL")]
    redis_url: Option<Vec<String>>,
    /// --redis-url names seed nodes of a Redis Cluster.
    #[arg(long, env = "FAYE_REDIS_CLUSTER", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    redis_cluster: Option<bool>,
    /// A CA certificate (PEM file) to check the Redis server's TLS certificate
    /// against, instead of the system's roots (with rediss:// URLs).
    #[arg(long, env = "FAYE_REDIS_CA_CERT", value_name = "FILE")]
    redis_ca_cert: Option<PathBuf>,
    /// Prefix of the engine's Redis keys (default faye; with --redis-layout
    /// faye-redis, empty, as faye-redis's); every node of one service uses the same.
    #[arg(long, env = "FAYE_REDIS_NAMESPACE")]
    redis_namespace: Option<String>,
    /// How the Redis engine lays out its data (default native). faye-redis: the
    /// keys of Node Faye's faye-redis 0.2.0, so that faye serve nodes join Node
    /// Faye servers on one Redis (a rolling migration; one Redis server only).
    #[arg(long, env = "FAYE_REDIS_LAYOUT", value_enum)]
    redis_layout: Option<RedisLayout>,
    /// Seconds a graceful stop (SIGTERM, Ctrl-C) may take (default 10): the server
    /// stops accepting, /readyz answers 503, held connects are answered at once,
    /// in-flight requests get the rest. A second signal stops at once.
    #[arg(long, env = "FAYE_DRAIN_TIMEOUT")]
    drain_timeout: Option<f64>,
    /// HOST:PORT of a second listener serving /metrics (Prometheus' text format),
    /// /healthz and /readyz (off by default).
    #[arg(long, env = "FAYE_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Certificate chain (PEM file) for TLS termination, with --tls-key: the server
    /// speaks HTTPS, HTTP/1.1 and HTTP/2 (ALPN). Reloaded on SIGHUP or when the
    /// files change.
    #[arg(long, env = "FAYE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM file) of --tls-cert.
    #[arg(long, env = "FAYE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Log lines as text or JSON (default text); RUST_LOG filters them (default
    /// info).
    #[arg(long, env = "FAYE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

impl ServeArgs {
    /// The settings: defaults, then the config file, then these values (flags and
    /// environment).
    fn settings(self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = &self.config {
            s.apply_file(path)?;
        }
        macro_rules! over {
            ($($arg:ident => $field:ident),* $(,)?) => {$(
                if let Some(v) = self.$arg { s.$field = v; }
            )*};
        }
        macro_rules! over_some {
            ($($arg:ident => $field:ident),* $(,)?) => {$(
                if let Some(v) = self.$arg { s.$field = Some(v); }
            )*};
        }
        over!(
            host => host, port => port, mount => mount, timeout => timeout,
            max_request_bytes => max_request_bytes, max_subscriptions => max_subscriptions,
            max_queue => max_queue, max_queue_bytes => max_queue_bytes,
            max_clients => max_clients, max_handshakes_per_request => max_handshakes_per_request,
            max_batch => max_batch, order_wait => order_wait, write_timeout => write_timeout,
            http2 => http2, websocket_deflate => websocket_deflate, engine => engine,
            status_page => status_page,
            redis_url => url, redis_cluster => cluster, redis_layout => layout,
            drain_timeout => drain_timeout, log_format => format,
        );
        over_some!(
            ping => ping, client_js => client_js, allowed_origins => allowed_origins,
            max_publishes_per_second => max_publishes_per_second,
            max_publish_bytes_per_second => max_publish_bytes_per_second,
            redis_ca_cert => ca_cert, redis_namespace => namespace, metrics_addr => addr,
            tls_cert => cert, tls_key => key,
        );
        Ok(s)
    }
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
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_naming_env(e));
    match cli.command {
        Command::Serve(args) => {
            let print = args.print_config;
            let settings = args.settings()?;
            if print {
                print!("{}", settings.to_commented_toml());
                return Ok(());
            }
            init_logs(settings.format);
            serve(settings).await
        }
        Command::Bench(cli) => {
            init_logs(LogFormat::Text);
            faye_bench::main(*cli).await
        }
        Command::Config => {
            print!("{}", Settings::default().to_commented_toml());
            Ok(())
        }
        Command::Subscribe(args) => {
            init_logs_quiet();
            std::process::exit(pubsub::subscribe(*args).await.into())
        }
        Command::Publish(args) => {
            init_logs_quiet();
            std::process::exit(pubsub::publish(*args).await.into())
        }
    }
}

/// Exits with clap's error, saying which `FAYE_*` variable a bad value came
/// from when it came from the environment (clap names only the flag).
fn exit_naming_env(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue};
    let arg = e.get(ContextKind::InvalidArg);
    let value = e.get(ContextKind::InvalidValue);
    if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (arg, value) {
        let flag = arg.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default();
        let var = format!("FAYE_{}", flag.to_uppercase().replace('-', "_"));
        if std::env::var(&var).is_ok_and(|v| v == *value) {
            let _ = e.print();
            eprintln!("(the value '{value}' came from the environment variable {var})");
            std::process::exit(e.exit_code());
        }
    }
    e.exit()
}

/// The client commands log only what RUST_LOG asks for (default: warnings).
fn init_logs_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Logs to stderr, as text or JSON lines, filtered by RUST_LOG (default info).
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

async fn serve(args: Settings) -> anyhow::Result<()> {
    match args.engine {
        EngineKind::Memory => metered(MemoryEngine::new(), "memory", args).await,
        EngineKind::Redis => {
            let config = redis_config(&args)?;
            let namespace = redis_namespace(&args);
            match args.layout {
                RedisLayout::Native => {
                    let engine = RedisEngine::connect(config)
                        .await
                        .context("cannot start the Redis engine")?;
                    tracing::info!(node = engine.node(), namespace, "connected to Redis");
                    metered(engine, "redis", args).await
                }
                RedisLayout::FayeRedis => {
                    let engine = FayeRedisEngine::connect(config)
                        .await
                        .context("cannot start the Redis engine (layout faye-redis)")?;
                    tracing::info!(namespace, "connected to Redis, in faye-redis's layout");
                    metered(engine, "redis", args).await
                }
            }
        }
    }
}

/// With a metrics listener, the engine's operations are timed too.
async fn metered<E: Engine>(engine: E, kind: &str, args: Settings) -> anyhow::Result<()> {
    if args.addr.is_some() {
        serve_with(faye_server::metrics::Metered::new(engine), kind, args).await
    } else {
        serve_with(engine, kind, args).await
    }
}

/// The Redis engine's settings from `--redis-*`.
fn redis_config(args: &Settings) -> anyhow::Result<RedisConfig> {
    let mut config = if args.cluster {
        // Seeds repeated or comma-separated (a sentinel URL, which has commas,
        // is not a cluster seed).
        let seeds: Vec<String> = args
            .url
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
        match args.url.as_slice() {
            [] => anyhow::bail!("--engine redis needs --redis-url (or FAYE_REDIS_URL)"),
            [url] => RedisConfig::new(url),
            _ => anyhow::bail!(
                "several --redis-url given: only a cluster (--redis-cluster) takes several"
            ),
        }
    };
    if let Some(path) = &args.ca_cert {
        config = config
            .ca_cert_file(path)
            .with_context(|| format!("cannot read --redis-ca-cert {}", path.display()))?;
    }
    Ok(config.namespace(redis_namespace(args)))
}

/// `--redis-namespace`, or the layout's default: faye-redis's is empty.
fn redis_namespace(args: &Settings) -> String {
    match (&args.namespace, args.layout) {
        (Some(namespace), _) => namespace.clone(),
        (None, RedisLayout::Native) => "faye".into(),
        (None, RedisLayout::FayeRedis) => String::new(),
    }
}

/// `Server` is generic over its engine: the engine is picked here, at start-up.
async fn serve_with<E: Engine>(engine: E, kind: &str, args: Settings) -> anyhow::Result<()> {
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
    let drain = seconds(args.drain_timeout, "drain-timeout")?;
    let mut serve_options = ServeOptions::default()
        .health(true)
        .landing_page(true)
        .status_page(args.status_page)
        .drain_timeout(drain);
    let scheme = match (args.cert, args.key) {
        (Some(cert), Some(key)) => {
            serve_options = serve_options.tls(tls::acceptor(cert, key)?);
            "https"
        }
        (None, None) => "http",
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    let faye = FayeService::new(server, options);

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let local: SocketAddr = listener.local_addr()?;
    // The first line on stdout: scripts and tests read the chosen port from it.
    println!("faye-rs listening on {scheme}://{local}{mount}");
    tracing::info!(%local, %mount, ?timeout, engine = kind, scheme, "serving");
    if let Some(addr) = &args.addr {
        let metrics = ops::metrics_listener(addr, faye.clone()).await?;
        println!("faye-rs metrics on http://{metrics}/metrics");
        tracing::info!(%metrics, "serving /metrics, /healthz and /readyz");
    }

    faye_http::serve_with(listener, faye, shutdown_signal(), serve_options).await;
    tracing::info!("stopped");
    Ok(())
}

/// The first SIGTERM or Ctrl-C starts a graceful stop; a second one exits at once.
async fn shutdown_signal() {
    signal().await;
    tracing::info!("shutting down (a second signal stops at once)");
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn signal() {
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
}
