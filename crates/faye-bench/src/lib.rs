//! `faye-bench`: a load generator for Bayeux servers (faye-rs, Node Faye, anything
//! that speaks the wire protocol), on this machine only.
//!
//! Scenarios:
//! - `chat`: CometD's benchmark workload. Clients join random rooms (default 1000
//!   clients, 100 rooms, 10 rooms each); publishers send batches of messages to
//!   random rooms on a fixed, open-loop schedule (default 10 × 50-byte messages
//!   every 10 ms).
//! - `rooms`: `chat` with the publish rate ramped to saturation.
//! - `fanout`: one channel, many subscribers (`--ramp` to find saturation).
//! - `idle`: many subscribed sessions held open, spread over several 127.0.0.x
//!   source addresses; reports the server's RSS per session.
//! - `cluster`: `idle` over several nodes of one cluster (`--node URL@PID` each),
//!   one generator process per node; reports each node's RSS per session and
//!   the time from one publish to the last delivery on any node.
//!
//! Every message carries its id, publisher, room and send time; the report has
//! deliveries/s, latency percentiles (HdrHistogram), lost, duplicated,
//! out-of-order and misrouted deliveries, and the server's RSS and CPU time when
//! given its pid.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use clap::Parser as _;
//! let cli = faye_bench::Cli::parse_from(["faye-bench", "fanout", "--url", "http://127.0.0.1:8000/bayeux"]);
//! faye_bench::main(cli).await?;
//! # Ok(()) }
//! ```

mod cluster;
mod group;
pub mod markdown;
mod procfs;
mod report;
mod scenario;
mod stats;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::{Parser, Subcommand, ValueEnum};

pub use report::{
    BUSY_PROCESS, ClusterNode, ClusterResult, GeneratorUsage, IdleResult, MACHINE_IDLE, Report,
    SCHEDULE_KEPT, Saturation, ServerUsage, Settings, StepResult, generator_limit, svg,
};
pub use stats::{Counts, Latency};

/// The workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// CometD's chat benchmark at a fixed rate.
    Chat,
    /// The chat workload, publish rate ramped to saturation.
    Rooms,
    /// One channel, many subscribers.
    Fanout,
    /// Many subscribed sessions held open.
    Idle,
    /// Idle sessions spread over several nodes of one cluster (`--node`), one
    /// generator process per node, then probes published on the first node.
    Cluster,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Rooms => "rooms",
            Self::Fanout => "fanout",
            Self::Idle => "idle",
            Self::Cluster => "cluster",
        }
    }
}

/// How subscribers receive messages. Publishers always use WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// One WebSocket per session (Faye's `websocket` connection type).
    Websocket,
    /// HTTP POST `/meta/connect` held until messages arrive (`long-polling`).
    LongPolling,
    /// Handshake, subscribe and connect by HTTP POST, deliveries down a
    /// `GET <mount>/<clientId>` with `Accept: text/event-stream` (`eventsource`).
    #[value(name = "eventsource")]
    #[serde(rename = "eventsource")]
    EventSource,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Websocket => "websocket",
            Self::LongPolling => "long-polling",
            Self::EventSource => "eventsource",
        }
    }
}

/// Longest publishing period of one step, seconds.
pub const MAX_DURATION_S: f64 = 300.0;
/// Most ramp steps.
pub const MAX_RAMP_STEPS: usize = 30;

/// Options of one benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The workload.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The server's Bayeux endpoint; loopback addresses only.
    #[arg(long, default_value = "http://127.0.0.1:8000/bayeux")]
    pub url: String,
    /// Publish through this endpoint instead of `--url` (another node of a
    /// cluster: the subscribers stay on `--url`); loopback addresses only.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Subscribers' transport.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
    /// Subscribing sessions (default 1000). Capped by the open-files limit.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Channels (chat/rooms).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Distinct rooms each client joins (chat/rooms).
    #[arg(long, default_value_t = 10)]
    pub rooms_per_client: usize,
    /// Publishing WebSocket connections; batches go round-robin over them
    /// (default: 10 for chat/rooms, 1 otherwise).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Messages per published batch (one frame) at the default rate.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Pause between batches, ms: batch i is sent at start + i × pause (open loop;
    /// a late batch is sent at once).
    #[arg(long, default_value_t = 10.0)]
    pub batch_pause_ms: f64,
    /// Publish rate in messages/s; overrides --batch-size (default: batch size /
    /// pause, so 1000/s for chat; 100/s for fanout).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes of text in each message.
    #[arg(long, default_value_t = 50)]
    pub message_size: usize,
    /// Seconds of publishing (per step when ramping; default 10, or 3 per ramp step).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds to wait after publishing for deliveries still in flight.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Ramp the publish rate until the server saturates (always on for `rooms`).
    #[arg(long)]
    pub ramp: bool,
    /// First ramp rate, messages/s (default: chat/rooms 100, fanout 10).
    #[arg(long)]
    pub ramp_start: Option<f64>,
    /// Rate factor between ramp steps.
    #[arg(long, default_value_t = 2.0)]
    pub ramp_factor: f64,
    /// Most ramp steps.
    #[arg(long, default_value_t = 14)]
    pub ramp_steps: usize,
    /// Steps between the last sustained and the first failed rate after the
    /// ramp overshoots (geometric bisection).
    #[arg(long, default_value_t = 2)]
    pub ramp_refine: usize,
    /// Unsustained ramp steps in a row (p99 over the bound) that end the ramp; a
    /// step that loses messages ends it at once.
    #[arg(long, default_value_t = 2)]
    pub ramp_patience: usize,
    /// A ramp step is sustained only with latency p99 at most this, ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound_ms: f64,
    /// A ramp step is sustained only with at most this fraction lost.
    #[arg(long, default_value_t = 0.001)]
    pub loss_bound: f64,
    /// The server's pid: report its RSS (/proc/PID/status VmRSS) and CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Publishers number their messages as Faye's client does (`id`: base 36,
    /// one counter per publisher), so a server that orders each client's
    /// messages by id (faye-rs does, see docs/ordering.md) orders them; without
    /// it messages carry no `id` and such a server applies them as they arrive.
    #[arg(long)]
    pub message_ids: bool,
    /// The pid of a Redis the server uses: report its CPU time and RSS too.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Cluster: a node, `URL` or `URL@PID` (repeat per node); `--clients` are
    /// split evenly over the nodes, each node's share in a process of its own.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// The channels' common prefix (set by `cluster` for its child processes).
    #[arg(long, hide = true)]
    pub channel_root: Option<String>,
    /// Idle: the probes are published by another process; say `ready` on stdout
    /// after the hold and wait for `go` on stdin (set by `cluster`).
    #[arg(long, hide = true)]
    pub external_probes: bool,
    /// Spread sessions over this many source addresses 127.0.0.1..=N (default: 8
    /// for idle, 1 otherwise).
    #[arg(long)]
    pub source_addrs: Option<usize>,
    /// Sessions being set up at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Idle: seconds to hold the sessions before measuring and probing.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Idle: messages published to all sessions after the hold.
    #[arg(long, default_value_t = 3)]
    pub probes: u64,
    /// Spread the subscribing sessions over this many worker processes (this
    /// binary re-executed), each opening its share; this process keeps the
    /// publishers. 1: everything in this process. Chat, rooms, fanout, idle.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Worker threads of each process's runtime (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON on stdout (instead of the text summary).
    #[arg(long)]
    pub json: bool,
    /// Write an SVG report (latency distribution, ramp) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Name of the server or run, for the report.
    #[arg(long)]
    pub label: Option<String>,
    /// No live progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Exit with an error if a fixed-rate or idle run lost, duplicated or
    /// misrouted a delivery, or a session failed (for CI smoke runs).
    #[arg(long)]
    pub fail_on_loss: bool,
}

/// The `faye-bench` command line.
#[derive(Debug, Parser)]
#[command(
    name = "faye-bench",
    version,
    about = "Load generator and benchmark for Bayeux servers on this machine",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A helper command instead of a run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run.
    #[command(flatten)]
    pub args: Option<Args>,
}

/// Helper commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Overlay several JSON reports in one SVG: `plot --out x.svg NAME=report.json …`.
    Plot(PlotArgs),
    /// Write `bench/compare`'s tables (Node Faye against faye-rs) into a Markdown
    /// file, between its GENERATED markers.
    Markdown(MarkdownArgs),
    /// A worker process of `--processes N`: reads its share of the sessions
    /// from stdin, reports on stdout (started by faye-bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Options of `worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Worker threads of this process's runtime (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Most processes and threads per process `--processes` and `--threads` accept.
pub const MAX_PROCESSES: usize = 64;

impl Cli {
    /// The worker threads the runtime should have, if the command line says
    /// (`--threads`); `None` for the runtime's default (one per CPU).
    pub fn threads(&self) -> Option<usize> {
        match (&self.command, &self.args) {
            (Some(Command::Worker(w)), _) => w.threads,
            (None, Some(a)) => a.threads,
            _ => None,
        }
        .map(|t| t.clamp(1, MAX_PROCESSES))
    }
}

/// The worker threads a runtime built with `threads` has.
fn effective_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Options of `markdown`: where the reports are, and what the run was.
#[derive(Debug, clap::Args)]
pub struct MarkdownArgs {
    /// The folder holding `<scenario>-{node,rs}.json` for chat, fanout, rooms,
    /// rooms-lp and idle.
    #[arg(long)]
    pub results: PathBuf,
    /// The Markdown file to update (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The command that ran the comparison.
    #[arg(long)]
    pub command: String,
    /// When the run started (UTC).
    #[arg(long)]
    pub started: String,
    /// How long the run took, seconds.
    #[arg(long)]
    pub elapsed: u64,
    /// The 1, 5 and 15 min load averages before the run.
    #[arg(long)]
    pub load_before: String,
    /// The same after the run.
    #[arg(long)]
    pub load_after: String,
    /// `node --version` of the Node Faye server.
    #[arg(long)]
    pub node_version: String,
    /// `rustc --version` of the faye-rs build.
    #[arg(long)]
    pub rustc_version: String,
    /// The faye-rs commit measured.
    #[arg(long)]
    pub commit: String,
    /// Write the Redis section (`redis-*.json` reports, see
    /// `markdown::REDIS_SCENARIOS`) instead of the main one.
    #[arg(long)]
    pub redis: bool,
    /// Write the mixed-cluster section (`mixed-*.json` reports, see
    /// `markdown::MIXED_SCENARIOS`) instead of the main one.
    #[arg(long, conflicts_with = "redis")]
    pub mixed: bool,
    /// Write the section comparing faye-rs with the ceiling (`ceiling-*.json`
    /// reports, see `markdown::CEILING_SCENARIOS`) instead of the main one.
    #[arg(long, conflicts_with_all = ["redis", "mixed"])]
    pub ceiling: bool,
    /// `redis-server --version` (with `--redis` or `--mixed`).
    #[arg(long, default_value = "")]
    pub redis_version: String,
}

/// Options of `plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Where to write the SVG.
    #[arg(long)]
    pub out: PathBuf,
    /// Title.
    #[arg(long, default_value = "faye-bench")]
    pub title: String,
    /// `LABEL=PATH` of a JSON report written with `--json`.
    #[arg(required = true)]
    pub reports: Vec<String>,
}

/// Runs what the command line asks: a benchmark (printing its report) or a helper.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.args) {
        (Some(Command::Plot(p)), _) => plot(p),
        (Some(Command::Markdown(m)), _) => write_markdown(m),
        (Some(Command::Worker(w)), _) => {
            group::worker_main(effective_threads(w.threads.map(|t| t.clamp(1, MAX_PROCESSES))))
                .await
        }
        (None, Some(args)) => {
            let (json, fail_on_loss) = (args.json, args.fail_on_loss);
            let report = run(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.summary());
            }
            if fail_on_loss {
                report.check_clean()?;
            }
            Ok(())
        }
        (None, None) => {
            anyhow::bail!(
                "give a scenario (chat, rooms, fanout, idle, cluster) or `plot`; see --help"
            )
        }
    }
}

fn plot(p: PlotArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for spec in &p.reports {
        let (label, path) = spec.split_once('=').unwrap_or((spec.as_str(), spec.as_str()));
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("{path} is not a report"))?;
        reports.push((label.to_owned(), report));
    }
    std::fs::write(&p.out, svg(&p.title, &reports))
        .with_context(|| format!("cannot write {}", p.out.display()))
}

fn write_markdown(m: MarkdownArgs) -> anyhow::Result<()> {
    let results = if m.ceiling {
        markdown::Results::load_ceiling(&m.results)?
    } else if m.mixed {
        markdown::Results::load_mixed(&m.results)?
    } else if m.redis {
        markdown::Results::load_redis(&m.results)?
    } else {
        markdown::Results::load(&m.results)?
    };
    let run = markdown::RunInfo {
        command: m.command,
        started: m.started,
        elapsed_s: m.elapsed,
        load_before: m.load_before,
        load_after: m.load_after,
        node_version: m.node_version,
        rustc_version: m.rustc_version,
        commit: m.commit,
        redis_version: m.redis_version,
    };
    let machine = markdown::Machine::this();
    let (generated, begin, end) = if m.ceiling {
        (
            markdown::generate_ceiling(&results, &run, &machine)?,
            markdown::BEGIN_CEILING,
            markdown::END_CEILING,
        )
    } else if m.mixed {
        (
            markdown::generate_mixed(&results, &run, &machine)?,
            markdown::BEGIN_MIXED,
            markdown::END_MIXED,
        )
    } else if m.redis {
        (
            markdown::generate_redis(&results, &run, &machine)?,
            markdown::BEGIN_REDIS,
            markdown::END_REDIS,
        )
    } else {
        (markdown::generate(&results, &run, &machine)?, markdown::BEGIN, markdown::END)
    };
    let doc = match std::fs::read_to_string(&m.out) {
        Ok(doc) => Some(doc),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", m.out.display())),
    };
    std::fs::write(&m.out, markdown::splice_section(doc.as_deref(), begin, end, &generated))
        .with_context(|| format!("cannot write {}", m.out.display()))
}

/// The soft open-files limit of this process.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs one benchmark and returns its report (also writing the SVG if asked).
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let target = wire::Target::parse(&args.url)?;
    let publish_target = match &args.publish_url {
        Some(url) => wire::Target::parse(url)?,
        None => target.clone(),
    };
    let scenario = args.scenario;
    let ramp = args.ramp || scenario == Scenario::Rooms;
    let chat_like = matches!(scenario, Scenario::Chat | Scenario::Rooms);
    let clients = args.clients.unwrap_or(1000);
    let fd_cap = open_files_limit().map_or(100_000, |n| n.saturating_sub(200)).min(100_000);
    ensure!(clients >= 1, "--clients must be at least 1");
    let nodes =
        args.nodes.iter().map(|n| cluster::Node::parse(n)).collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        (scenario == Scenario::Cluster) != nodes.is_empty(),
        "--node is for the cluster scenario, which needs at least one"
    );
    ensure!(
        (1..=MAX_PROCESSES).contains(&args.processes),
        "--processes must be in 1..={MAX_PROCESSES}"
    );
    ensure!(
        args.processes == 1
            || matches!(
                scenario,
                Scenario::Chat | Scenario::Rooms | Scenario::Fanout | Scenario::Idle
            ),
        "--processes is for chat, rooms, fanout and idle (cluster runs a process per node)"
    );
    ensure!(args.processes == 1 || !args.external_probes, "--external-probes runs in one process");
    ensure!(
        args.threads.is_none_or(|t| (1..=MAX_PROCESSES).contains(&t)),
        "--threads must be in 1..={MAX_PROCESSES}"
    );
    // Each process opens its share of the sessions (one file each).
    let per_process = clients.div_ceil(nodes.len().max(1) * args.processes);
    ensure!(
        per_process <= fd_cap,
        "--clients {clients} means {per_process} sessions per process, more than one may open ({fd_cap} with the current open-files limit); use more --processes"
    );
    let (rooms, rooms_per_client) = if chat_like {
        ensure!(args.rooms >= 1, "--rooms must be at least 1");
        ensure!(
            (1..=args.rooms).contains(&args.rooms_per_client),
            "--rooms-per-client must be between 1 and --rooms"
        );
        (args.rooms, args.rooms_per_client)
    } else {
        (1, 1)
    };
    let publishers = args.publishers.unwrap_or(if chat_like { 10 } else { 1 }).max(1);
    ensure!(publishers <= 1000, "--publishers is capped at 1000");
    ensure!(args.batch_pause_ms >= 0.1, "--batch-pause-ms must be at least 0.1");
    let default_rate = match scenario {
        Scenario::Fanout | Scenario::Idle | Scenario::Cluster
            if args.rate.is_none() && args.batch_size == 10 =>
        {
            100.0
        }
        _ => args.batch_size as f64 * 1000.0 / args.batch_pause_ms,
    };
    let rate = args.rate.unwrap_or(default_rate);
    ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    let duration = args.duration.unwrap_or(if ramp { 3.0 } else { 10.0 });
    ensure!(
        duration > 0.0 && duration <= MAX_DURATION_S,
        "--duration must be in (0, {MAX_DURATION_S}] seconds"
    );
    ensure!((0.0..=60.0).contains(&args.drain), "--drain must be in [0, 60] seconds");
    ensure!((0.0..=600.0).contains(&args.hold), "--hold must be in [0, 600] seconds");
    ensure!((1..=1000).contains(&args.probes), "--probes must be in 1..=1000");
    ensure!(args.ramp_factor > 1.0, "--ramp-factor must be above 1");
    ensure!(
        (1..=MAX_RAMP_STEPS).contains(&args.ramp_steps),
        "--ramp-steps must be in 1..={MAX_RAMP_STEPS}"
    );
    ensure!(args.message_size <= 1 << 20, "--message-size is capped at 1 MiB");
    let idle_like = matches!(scenario, Scenario::Idle | Scenario::Cluster);
    let source_addrs = args.source_addrs.unwrap_or(if idle_like { 8 } else { 1 }).clamp(1, 250);

    let label = args.label.clone().unwrap_or_else(|| match nodes.len() {
        0 => target.authority.clone(),
        n => format!("cluster of {n} nodes"),
    });
    let plan = scenario::Plan {
        target,
        publish_target,
        transport: args.transport,
        clients,
        rooms,
        rooms_per_client,
        publishers,
        rate,
        pause: Duration::from_secs_f64(args.batch_pause_ms / 1000.0),
        duration: Duration::from_secs_f64(duration),
        drain: Duration::from_secs_f64(args.drain),
        message_size: args.message_size,
        server_pid: args.server_pid,
        source_addrs,
        connect_concurrency: args.connect_concurrency.clamp(1, 10_000),
        progress: !args.quiet,
        label: label.clone(),
        idle_hold: None,
        channel_root: args.channel_root.clone(),
        external_probes: args.external_probes.then_some(args.probes),
        redis_pid: args.redis_pid,
        message_ids: args.message_ids,
        processes: args.processes,
        threads_arg: args.threads,
        threads: effective_threads(args.threads),
        held_after: 1,
    };
    let mut report = Report {
        label,
        scenario: scenario.name().to_owned(),
        transport: args.transport.name().to_owned(),
        url: args.url.clone(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        settings: Settings {
            clients,
            rooms,
            rooms_per_client,
            publishers,
            message_size: args.message_size,
            duration_s: duration,
            rate,
            ramp_factor: ramp.then_some(args.ramp_factor),
            p99_bound_ms: ramp.then_some(args.p99_bound_ms),
            source_addrs,
        },
        steps: Vec::new(),
        saturation: None,
        idle: None,
        cluster: None,
    };
    if scenario == Scenario::Cluster {
        let children = cluster::ChildArgs {
            hold: args.hold,
            probes: args.probes,
            drain: args.drain.max(10.0),
            source_addrs,
            connect_concurrency: args.connect_concurrency.clamp(1, 10_000),
        };
        report.cluster = Some(cluster::run(plan, nodes, clients, children).await?);
        report.settings.rate = 0.0;
    } else if scenario == Scenario::Idle {
        report.idle = Some(scenario::run_idle(plan, args.hold, args.probes).await?);
        report.settings.rate = 0.0;
    } else if ramp {
        let start = args.ramp_start.unwrap_or(if chat_like { 100.0 } else { 10.0 });
        ensure!(start > 0.0, "--ramp-start must be positive");
        report.settings.rate = start;
        let bounds = scenario::RampBounds {
            start,
            factor: args.ramp_factor,
            steps: args.ramp_steps,
            refine: args.ramp_refine.min(5),
            patience: args.ramp_patience.clamp(1, MAX_RAMP_STEPS),
            p99_bound_ms: args.p99_bound_ms,
            loss_bound: args.loss_bound,
        };
        let (steps, saturation) = scenario::run_ramp(plan, bounds).await?;
        report.steps = steps;
        report.saturation = Some(saturation);
    } else {
        report.steps.push(scenario::run_step(plan).await?.result);
    }
    if let Some(path) = &args.svg {
        let title =
            format!("faye-bench {} over {}: {}", report.scenario, report.transport, report.label);
        std::fs::write(path, svg(&title, &[(report.label.clone(), report.clone())]))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}
