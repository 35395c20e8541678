//! Running a workload: subscribers, publishers, progress, drain, and the ramp to
//! saturation.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout};

use crate::group::{Counters, GroupSpec, Groups};
use crate::report::{
    GeneratorUsage, IdleResult, Saturation, ServerUsage, StepResult, generator_limit,
};
use crate::stats::{Counts, Latency, Tally};
use crate::wire::{self, Marker, SETUP_TIMEOUT, Target, Ws};
use crate::{Transport, procfs};

/// Nanoseconds on the system's monotonic clock (`CLOCK_MONOTONIC`): the clock
/// both ends of every message share, also when they are different generator
/// processes (`cluster`).
pub(crate) fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A small fast PRNG (xorshift64*), seeded per task.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// What one step runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) target: Target,
    /// Where the publishers connect: `target` unless publishing through
    /// another node (`--publish-url`).
    pub(crate) publish_target: Target,
    pub(crate) transport: Transport,
    pub(crate) clients: usize,
    pub(crate) rooms: usize,
    pub(crate) rooms_per_client: usize,
    pub(crate) publishers: usize,
    /// Messages/s.
    pub(crate) rate: f64,
    /// Pause between batches at the nominal batch size; the batch size follows
    /// from the rate.
    pub(crate) pause: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) message_size: usize,
    pub(crate) server_pid: Option<u32>,
    pub(crate) source_addrs: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) progress: bool,
    pub(crate) label: String,
    /// Idle: hold the sessions this long before publishing, and measure the
    /// server's RSS before the sessions and after the hold.
    pub(crate) idle_hold: Option<Duration>,
    /// The channels' common prefix (default: a fresh one per step).
    pub(crate) channel_root: Option<String>,
    /// Another process publishes this many probes (`cluster`): after the hold,
    /// print `ready` on stdout, wait for `go` on stdin, then expect the probes.
    pub(crate) external_probes: Option<u64>,
    /// A Redis the server uses: its CPU time and RSS are reported too.
    pub(crate) redis_pid: Option<u32>,
    /// Publishers number their messages as Faye's client does.
    pub(crate) message_ids: bool,
    /// Processes holding the subscribers: 1 for this one, N > 1 for N worker
    /// processes (this one keeps the publishers).
    pub(crate) processes: usize,
    /// `--threads`, passed on to the workers.
    pub(crate) threads_arg: Option<usize>,
    /// Worker threads of this process's runtime (and of each worker's).
    pub(crate) threads: usize,
    /// A session counts as held with at least this many distinct deliveries.
    pub(crate) held_after: u64,
}

impl Plan {
    /// Messages per batch and the pause between batches for the plan's rate.
    fn schedule(&self) -> (usize, Duration) {
        let nominal = self.pause.as_secs_f64();
        let batch = (self.rate * nominal).round().max(1.0);
        (batch as usize, Duration::from_secs_f64(batch / self.rate))
    }
}

/// What the publishers count, read by the progress line and the drain loop.
struct Shared {
    expected: AtomicU64,
    published: AtomicU64,
    /// Room index → channel name.
    channels: Vec<String>,
    publishers: usize,
}

impl Shared {
    fn new(channels: Vec<String>, publishers: usize) -> Arc<Self> {
        Arc::new(Self {
            expected: AtomicU64::new(0),
            published: AtomicU64::new(0),
            channels,
            publishers,
        })
    }
}

/// What a publisher task returns.
#[derive(Default)]
struct PubOutcome {
    published: u64,
    failed: u64,
    max_lag: Duration,
    end: Option<Instant>,
}

/// A step's result plus what the idle scenario needs.
pub(crate) struct StepOutcome {
    pub(crate) result: StepResult,
    /// Sessions with at least `plan.held_after` distinct deliveries.
    held: u64,
    /// When the last delivery arrived (`CLOCK_MONOTONIC`, ns; 0 if none did).
    last_recv_ns: u64,
    setup: Duration,
    rss_before: Option<u64>,
    rss_after_hold: Option<u64>,
}

pub(crate) fn channel_root() -> String {
    let nonce =
        (now_ns() ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9);
    format!("/bench/{:x}", nonce & 0xffff_ffff_ffff)
}

/// Each client's rooms: `per_client` distinct rooms drawn at random.
pub(crate) fn assign_rooms(
    clients: usize,
    rooms: usize,
    per_client: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..clients)
        .map(|_| {
            let mut mine: Vec<u32> = Vec::with_capacity(per_client);
            while mine.len() < per_client.min(rooms) {
                let r = rng.below(rooms) as u32;
                if !mine.contains(&r) {
                    mine.push(r);
                }
            }
            mine
        })
        .collect()
}

/// Runs one fixed-rate step: the subscribers as groups (in this process, or
/// spread over worker processes, see `group`), the publishers here.
pub(crate) async fn run_step(plan: Plan) -> anyhow::Result<StepOutcome> {
    let root = plan.channel_root.clone().unwrap_or_else(channel_root);
    let shared =
        Shared::new((0..plan.rooms).map(|r| format!("{root}/r{r}")).collect(), plan.publishers);
    let rss_before = plan.server_pid.and_then(procfs::rss_kib);

    // Subscribers: set up with bounded concurrency, then receive until stopped.
    let spec = GroupSpec {
        url: format!("http://{}{}", plan.target.authority, plan.target.path),
        transport: plan.transport,
        first: 0,
        clients: plan.clients,
        rooms: plan.rooms,
        rooms_per_client: plan.rooms_per_client,
        publishers: plan.publishers,
        channel_root: root,
        seed: now_ns(),
        source_addrs: plan.source_addrs,
        connect_concurrency: plan.connect_concurrency,
        held_after: plan.held_after,
    };
    let setup_start = Instant::now();
    let (mut groups, ready) = Groups::start(&spec, plan.processes, plan.threads_arg).await?;
    let setup = setup_start.elapsed();
    let counters = groups.counters();
    let delivered =
        move || -> u64 { counters.iter().map(|c| c.delivered.load(Ordering::Relaxed)).sum() };
    let progress = plan.progress.then(|| {
        spawn_progress(plan.label.clone(), shared.clone(), groups.counters(), plan.clients)
    });
    let (sessions, sessions_failed) = (ready.sessions, ready.failed);
    if let Some(e) = &ready.first_error {
        eprintln!(
            "\n{}: {sessions_failed} sessions failed to set up; first error: {e}",
            plan.label
        );
    }
    if sessions == 0 {
        if let Some(p) = progress {
            p.abort();
        }
        let _ = groups.finish().await;
        bail!("no session could be set up: {}", ready.first_error.as_deref().unwrap_or("?"));
    }
    // Members per room, counting only the sessions that are up.
    let members = ready.members;
    let live_rooms: Vec<u32> =
        (0..plan.rooms as u32).filter(|&r| members[r as usize] > 0).collect();

    let mut rss_after_hold = None;
    if let Some(hold) = plan.idle_hold {
        sleep(hold).await;
        groups.check_alive()?;
        rss_after_hold = plan.server_pid.and_then(procfs::rss_kib);
    }

    let members = Arc::new(members);
    let live_rooms = Arc::new(live_rooms);
    let (outcomes, begin) = if let Some(probes) = plan.external_probes {
        await_go().await?;
        shared.expected.store(members[0] * probes, Ordering::Relaxed);
        let begin = Begin::now(&plan, Duration::ZERO);
        groups.go().await?;
        (Vec::new(), begin)
    } else {
        publish(&plan, &shared, &members, &live_rooms, Some(&mut groups)).await?
    };
    let (begin_ns, begin_at) = (begin.ns, begin.at);
    let publish_end = outcomes.iter().filter_map(|o| o.end).max().unwrap_or_else(Instant::now);
    // Drain: wait for every expected delivery, or until the drain time is up.
    let drain_deadline = publish_end + plan.drain;
    loop {
        groups.check_alive()?;
        let expected = shared.expected.load(Ordering::Relaxed);
        if delivered() >= expected || Instant::now() >= drain_deadline {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let server = plan.server_pid.map(|pid| Usage::since(pid, begin.server_cpu));
    let redis = plan.redis_pid.map(|pid| Usage::since(pid, begin.redis_cpu));
    let gen_cpu_after = procfs::cpu_seconds(None).unwrap_or(0.0);
    let machine_after = procfs::machine_ticks();
    let window_s = begin_at.elapsed().as_secs_f64().max(1e-9);

    let reports = groups.finish().await?;
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }

    let expected = shared.expected.load(Ordering::Relaxed);
    let mut tally = Tally::default();
    let mut histogram = crate::stats::new_histogram();
    let (mut dropped, mut held) = (0, 0);
    // This process (publishers, and the subscribers when it holds them), then
    // each worker's.
    let own_cpu = gen_cpu_after - begin.generator_cpu;
    let mut cpus = vec![(own_cpu, plan.threads)];
    for r in &reports {
        tally.merge(&r.tally);
        histogram.add(&r.histogram).context("a worker's histogram")?;
        dropped += r.dropped;
        held += r.held;
        cpus.extend(r.process.map(|p| (p.cpu_s, p.threads)));
    }
    let counts = Counts::from_tallies(expected, [&tally]);
    let publish_s = publish_end.saturating_duration_since(begin_at).as_secs_f64().max(1e-9);
    let elapsed_s = (tally.last_recv_ns.saturating_sub(begin_ns) as f64 / 1e9).max(publish_s);
    let published: u64 = outcomes.iter().map(|o| o.published).sum();
    let mean_members = if published == 0 { 0.0 } else { expected as f64 / published as f64 };
    let publish_rate = published as f64 / publish_s;
    let generator_cpu_s: f64 = cpus.iter().map(|c| c.0).sum();
    let busiest_share = cpus
        .iter()
        .map(|&(cpu, threads)| cpu / (window_s * threads.max(1) as f64))
        .fold(0.0, f64::max);
    let machine_idle_share =
        begin.machine.zip(machine_after).and_then(|(a, b)| procfs::idle_share(a, b));
    // Probes (idle, cluster) are a trickle: their schedule is not a load.
    let offered =
        if plan.idle_hold.is_some() || plan.external_probes.is_some() { 0.0 } else { plan.rate };
    let generator = GeneratorUsage {
        processes: cpus.len(),
        threads: plan.threads,
        cpu_s: generator_cpu_s,
        busiest_share,
        machine_idle_share,
        bound: generator_limit(publish_rate, offered, busiest_share, machine_idle_share),
    };
    let result = StepResult {
        offered_msgs_per_sec: plan.rate,
        offered_deliveries_per_sec: plan.rate * mean_members,
        published,
        publish_failed: outcomes.iter().map(|o| o.failed).sum(),
        publish_rate,
        max_schedule_lag_ms: outcomes
            .iter()
            .map(|o| o.max_lag)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        sessions,
        sessions_failed,
        sessions_dropped: dropped,
        counts,
        deliveries_per_sec: counts.delivered as f64 / elapsed_s,
        elapsed_s,
        latency: Latency::from_histogram(&histogram),
        server: server.map(|u| u.report(counts.delivered)),
        redis: redis.map(|u| u.report(counts.delivered)),
        generator_cpu_s,
        generator: Some(generator),
        sustained: None,
    };
    Ok(StepOutcome {
        result,
        held,
        last_recv_ns: tally.last_recv_ns,
        setup,
        rss_before,
        rss_after_hold,
    })
}

/// A process's CPU time over a step, and its memory at the end.
struct Usage {
    pid: u32,
    cpu_s: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
}

impl Usage {
    fn since(pid: u32, cpu_before: Option<f64>) -> Self {
        let cpu_s = match (cpu_before, procfs::cpu_seconds(Some(pid))) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        Self {
            pid,
            cpu_s,
            rss_kib: procfs::rss_kib(pid).unwrap_or(0),
            peak_rss_kib: procfs::peak_rss_kib(pid).unwrap_or(0),
        }
    }

    fn report(self, delivered: u64) -> ServerUsage {
        ServerUsage {
            pid: self.pid,
            rss_kib: self.rss_kib,
            peak_rss_kib: self.peak_rss_kib,
            cpu_s: self.cpu_s,
            deliveries_per_cpu_s: if self.cpu_s > 0.0 {
                delivered as f64 / self.cpu_s
            } else {
                0.0
            },
        }
    }
}

/// When publishing begins, on both clocks, and the CPU times then.
struct Begin {
    at: Instant,
    ns: u64,
    server_cpu: Option<f64>,
    redis_cpu: Option<f64>,
    generator_cpu: f64,
    /// The machine's (idle, total) CPU ticks.
    machine: Option<(u64, u64)>,
}

impl Begin {
    fn now(plan: &Plan, delay: Duration) -> Self {
        Self {
            server_cpu: plan.server_pid.and_then(|p| procfs::cpu_seconds(Some(p))),
            redis_cpu: plan.redis_pid.and_then(|p| procfs::cpu_seconds(Some(p))),
            generator_cpu: procfs::cpu_seconds(None).unwrap_or(0.0),
            machine: procfs::machine_ticks(),
            at: Instant::now() + delay,
            ns: now_ns() + delay.as_nanos() as u64,
        }
    }
}

/// The publishers of a step: set up, started together, run to the end of the
/// schedule. Returns their outcomes and when publishing began.
async fn publish(
    plan: &Plan,
    shared: &Arc<Shared>,
    members: &Arc<Vec<u64>>,
    live_rooms: &Arc<Vec<u32>>,
    groups: Option<&mut Groups>,
) -> anyhow::Result<(Vec<PubOutcome>, Begin)> {
    // Publishers.
    let (batch, pause) = plan.schedule();
    let batches = (plan.duration.as_secs_f64() / pause.as_secs_f64()).round().max(1.0) as u64;
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let (pub_ready_tx, mut pub_ready_rx) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let mut pubs = Vec::new();
    for k in 0..plan.publishers {
        let job = PublishJob {
            k,
            target: plan.publish_target.clone(),
            shared: shared.clone(),
            members: members.clone(),
            live_rooms: live_rooms.clone(),
            batch,
            pause,
            batches,
            pad: "x".repeat(plan.message_size),
            reply_deadline: plan.drain.max(Duration::from_secs(2)),
            message_ids: plan.message_ids,
        };
        pubs.push(tokio::spawn(publisher(job, pub_ready_tx.clone(), start_rx.clone())));
    }
    drop(pub_ready_tx);
    while let Some(r) = pub_ready_rx.recv().await {
        if let Err(e) = r {
            bail!("a publisher failed to set up: {e:#}");
        }
    }
    // Let the servers attach the sockets the last connects named.
    sleep(Duration::from_millis(200)).await;

    let begin = Begin::now(plan, Duration::from_millis(20));
    if let Some(g) = groups {
        g.go().await?;
    }
    let _ = start_tx.send(Some(begin.at));

    let mut outcomes = Vec::new();
    for p in pubs {
        outcomes.push(p.await.context("publisher task")?);
    }
    Ok((outcomes, begin))
}

fn spawn_progress(
    label: String,
    shared: Arc<Shared>,
    groups: Vec<Arc<Counters>>,
    clients: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let start = Instant::now();
        let (mut last_pub, mut last_del) = (0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let published = shared.published.load(Ordering::Relaxed);
            let delivered: u64 = groups.iter().map(|c| c.delivered.load(Ordering::Relaxed)).sum();
            let dropped: u64 = groups.iter().map(|c| c.dropped.load(Ordering::Relaxed)).sum();
            let expected = shared.expected.load(Ordering::Relaxed);
            let line = format!(
                "{label}: {:>5.0}s | {clients} sessions, {} dropped | published {published} ({}/s) | delivered {delivered}/{expected} ({}/s)",
                start.elapsed().as_secs_f64(),
                dropped,
                published - last_pub,
                delivered - last_del,
            );
            (last_pub, last_del) = (published, delivered);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
    })
}

/// `cluster`'s child side: says `ready` on stdout and waits (at most 10 min)
/// for `go` on stdin, the parent's sign that every child is ready and the
/// probes are about to be published.
async fn await_go() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    timeout(Duration::from_secs(600), stdin.read_line(&mut line))
        .await
        .context("no `go` on stdin within 10 min")??;
    anyhow::ensure!(line.trim() == "go", "expected `go` on stdin, got {line:?}");
    Ok(())
}

pub(crate) async fn recv_setup(
    ws: &mut Ws,
) -> anyhow::Result<tokio_tungstenite::tungstenite::Bytes> {
    timeout(SETUP_TIMEOUT, wire::ws_recv(ws))
        .await
        .context("no reply in time")??
        .context("server closed the WebSocket")
}

struct PublishJob {
    k: usize,
    target: Target,
    shared: Arc<Shared>,
    members: Arc<Vec<u64>>,
    live_rooms: Arc<Vec<u32>>,
    batch: usize,
    pause: Duration,
    batches: u64,
    pad: String,
    reply_deadline: Duration,
    message_ids: bool,
}

/// One publishing WebSocket: batches k, k + P, k + 2P, … of the schedule.
async fn publisher(
    job: PublishJob,
    ready: mpsc::UnboundedSender<anyhow::Result<()>>,
    mut start: watch::Receiver<Option<Instant>>,
) -> PubOutcome {
    let setup = async {
        let mut ws = wire::ws_connect(&job.target, None).await?;
        wire::ws_send(&mut ws, wire::handshake_json("websocket")).await?;
        let client_id = wire::parse_handshake(&recv_setup(&mut ws).await?)?;
        anyhow::Ok((ws, client_id))
    };
    let (mut ws, client_id) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return PubOutcome::default();
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let Ok(begin) = start.wait_for(Option::is_some).await.map(|b| b.expect("checked")) else {
        return PubOutcome::default();
    };
    let shared = &job.shared;
    let quoted: Vec<String> = shared.channels.iter().map(|c| wire::json_str(c)).collect();
    let cid = wire::json_str(&client_id);
    let publishers = shared.publishers as u64;
    let mut rng = Rng::new(now_ns() ^ (job.k as u64) << 40);
    let mut out = PubOutcome::default();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut i = job.k as u64;
    let mut reply_deadline = None;
    let mut frame = String::new();
    // With `message_ids`, messages are numbered as Faye's client numbers them
    // (base 36, one counter per client, following the handshake's id `h`), so
    // a server that orders each client's messages by id (faye-rs does) can.
    let mut next_id = wire::HANDSHAKE_ID + 1;
    loop {
        let next_at = begin + job.pause.mul_f64(i as f64);
        let sending = i < job.batches;
        if !sending {
            let deadline =
                *reply_deadline.get_or_insert_with(|| Instant::now() + job.reply_deadline);
            // Every publish gets a reply; wait for them all (or the deadline).
            if ok + failed >= out.published || Instant::now() >= deadline {
                break;
            }
        }
        tokio::select! {
            biased;
            _ = sleep_until(next_at.into()), if sending => {
                out.max_lag = out.max_lag.max(Instant::now().saturating_duration_since(next_at));
                frame.clear();
                frame.push('[');
                let mut expected = 0;
                for j in 0..job.batch {
                    let room = job.live_rooms[rng.below(job.live_rooms.len())];
                    expected += job.members[room as usize];
                    let d = Marker {
                        id: i * job.batch as u64 + j as u64,
                        publisher: job.k as u32,
                        room,
                        t_ns: now_ns(),
                    };
                    if j > 0 {
                        frame.push(',');
                    }
                    frame.push_str("{\"channel\":");
                    frame.push_str(&quoted[room as usize]);
                    frame.push_str(",\"clientId\":");
                    frame.push_str(&cid);
                    if job.message_ids {
                        frame.push_str(",\"id\":\"");
                        wire::push_base36(&mut frame, next_id);
                        frame.push('"');
                        next_id += 1;
                    }
                    frame.push_str(",\"data\":");
                    frame.push_str(&wire::data_json(d, &job.pad));
                    frame.push('}');
                }
                frame.push(']');
                if wire::ws_send(&mut ws, frame.clone()).await.is_err() {
                    break;
                }
                out.published += job.batch as u64;
                shared.published.fetch_add(job.batch as u64, Ordering::Relaxed);
                shared.expected.fetch_add(expected, Ordering::Relaxed);
                i += publishers;
                if i >= job.batches {
                    out.end = Some(Instant::now());
                }
            }
            frame = wire::ws_recv(&mut ws) => match frame {
                Ok(Some(f)) => {
                    let (o, f) = wire::count_replies(&f);
                    ok += o;
                    failed += f;
                }
                _ => break,
            },
            _ = sleep(Duration::from_millis(50)), if !sending => {}
        }
    }
    out.end.get_or_insert_with(Instant::now);
    out.failed = failed;
    let _ = timeout(Duration::from_secs(2), async {
        let _ = wire::ws_send(&mut ws, wire::disconnect_json(&client_id)).await;
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    out
}

/// The ramp's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RampBounds {
    pub(crate) start: f64,
    pub(crate) factor: f64,
    pub(crate) steps: usize,
    pub(crate) refine: usize,
    /// Unsustained steps in a row that end the ramp.
    pub(crate) patience: usize,
    pub(crate) p99_bound_ms: f64,
    pub(crate) loss_bound: f64,
}

/// Why a step does not count as sustained, if it does not.
fn unsustained(r: &StepResult, b: &RampBounds) -> Option<String> {
    if r.sessions_failed > 0 || r.sessions_dropped > 0 {
        return Some(format!(
            "{} sessions failed, {} dropped",
            r.sessions_failed, r.sessions_dropped
        ));
    }
    if r.counts.loss_ratio() > b.loss_bound {
        return Some(format!(
            "{} of {} deliveries lost ({:.2}%)",
            r.counts.lost,
            r.counts.expected,
            r.counts.loss_ratio() * 100.0
        ));
    }
    if r.latency.p99_ms > b.p99_bound_ms {
        return Some(format!("p99 {:.1} ms > {} ms", r.latency.p99_ms, b.p99_bound_ms));
    }
    // A step the generator could not drive (or that ran on a saturated
    // machine) says nothing about the server's limit.
    r.generator_bound().map(|why| format!("generator-bound: {why}"))
}

/// Waits (up to 15 s) until the server uses under 10% of a core, so that a step
/// does not start while it still works off the previous one.
async fn settle_server(pid: Option<u32>) {
    let Some(pid) = pid else {
        sleep(Duration::from_millis(500)).await;
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let Some(a) = procfs::cpu_seconds(Some(pid)) else { return };
        sleep(Duration::from_millis(500)).await;
        let Some(b) = procfs::cpu_seconds(Some(pid)) else { return };
        if b - a < 0.05 {
            return;
        }
    }
}

/// Ramps the publish rate: × factor per step until deliveries/s stop growing,
/// a step loses messages, or `patience` steps in a row miss the bounds; then
/// bisects between the best sustained rate and the first failed rate above it.
/// The saturation is the best sustained step's deliveries/s.
pub(crate) async fn run_ramp(
    plan: Plan,
    b: RampBounds,
) -> anyhow::Result<(Vec<StepResult>, Saturation)> {
    let mut steps: Vec<StepResult> = Vec::new();
    let mut best: Option<usize> = None;
    let mut rate = b.start;
    let mut failed_rate = None;
    let mut stop_reason = format!("reached {} steps", b.steps);
    let run = |rate: f64| {
        let mut p = plan.clone();
        p.rate = rate;
        p.label = format!("{} @{rate:.0} msg/s", plan.label);
        async move {
            settle_server(p.server_pid).await;
            run_step(p).await
        }
    };
    let mut most_delivered = 0.0f64;
    let mut misses = 0;
    while steps.len() < b.steps {
        let mut r = run(rate).await?.result;
        let why = unsustained(&r, &b);
        r.sustained = Some(why.is_none());
        let grew = r.deliveries_per_sec > most_delivered * 1.05;
        most_delivered = most_delivered.max(r.deliveries_per_sec);
        let overloaded = r.counts.loss_ratio() > b.loss_bound || r.sessions_dropped > 0;
        steps.push(r);
        match why {
            None if grew => {
                best = Some(steps.len() - 1);
                failed_rate = None;
                misses = 0;
                rate *= b.factor;
                continue;
            }
            _ if !grew => {
                stop_reason = "deliveries/s stopped growing".into();
                failed_rate.get_or_insert(rate);
                break;
            }
            None => unreachable!("handled above"),
            Some(why) => {
                // Latency need not rise monotonically with the rate (servers that
                // batch get cheaper per delivery under load), so a step over the
                // p99 bound ends the ramp only after `patience` in a row; loss or
                // dropped sessions (overload) end it at once.
                failed_rate.get_or_insert(rate);
                misses += 1;
                if overloaded || misses >= b.patience {
                    stop_reason = why;
                    break;
                }
                rate *= b.factor;
            }
        }
    }
    if let Some(mut bad) = failed_rate {
        for _ in 0..b.refine {
            let good = best.map_or(b.start / b.factor, |i| steps[i].offered_msgs_per_sec);
            let mid = (good * bad).sqrt();
            if steps.len() >= b.steps + b.refine || mid <= good * 1.02 {
                break;
            }
            let mut r = run(mid).await?.result;
            let ok = unsustained(&r, &b).is_none()
                && r.deliveries_per_sec > best.map_or(0.0, |i| steps[i].deliveries_per_sec);
            r.sustained = Some(unsustained(&r, &b).is_none());
            steps.push(r);
            if ok {
                best = Some(steps.len() - 1);
            } else {
                bad = mid;
            }
        }
    }
    let saturation = Saturation {
        max_sustained_deliveries_per_sec: best.map_or(0.0, |i| steps[i].deliveries_per_sec),
        step: best,
        stop_reason,
    };
    Ok((steps, saturation))
}

/// One channel, one publisher, `probes` messages at 5/s.
fn probe_schedule(plan: &mut Plan, probes: u64) {
    plan.rooms = 1;
    plan.rooms_per_client = 1;
    plan.publishers = 1;
    plan.rate = 5.0;
    plan.pause = Duration::from_millis(200);
    plan.duration = Duration::from_secs_f64(probes as f64 / plan.rate);
}

/// `cluster`'s publisher: `probes` messages (5/s) to the one channel under
/// `plan.channel_root`, whose `members` subscribers live in other processes.
/// Returns how many were published and when publishing began (ns, on the
/// shared clock).
pub(crate) async fn publish_probes(
    mut plan: Plan,
    members: u64,
    probes: u64,
) -> anyhow::Result<(u64, u64)> {
    probe_schedule(&mut plan, probes);
    let root = plan.channel_root.clone().unwrap_or_else(channel_root);
    let shared = Shared::new(vec![format!("{root}/r0")], 1);
    let (outcomes, begin) =
        publish(&plan, &shared, &Arc::new(vec![members]), &Arc::new(vec![0]), None).await?;
    Ok((outcomes.iter().map(|o| o.published).sum(), begin.ns))
}

/// Sets up `plan.clients` sessions, holds them, measures the server's RSS, then
/// publishes `probes` messages that every session must receive.
pub(crate) async fn run_idle(mut plan: Plan, hold: f64, probes: u64) -> anyhow::Result<IdleResult> {
    probe_schedule(&mut plan, probes);
    plan.idle_hold = Some(Duration::from_secs_f64(hold));
    plan.drain = plan.drain.max(Duration::from_secs(10));
    plan.held_after = probes;
    let requested = plan.clients as u64;
    let out = run_step(plan).await?;
    let established = out.result.sessions;
    let held = out.held;
    let per_session = match (out.rss_before, out.rss_after_hold) {
        (Some(b), Some(a)) if established > 0 => {
            Some(a.saturating_sub(b) as f64 / established as f64)
        }
        _ => None,
    };
    Ok(IdleResult {
        last_delivery_ns: (out.last_recv_ns > 0).then_some(out.last_recv_ns),
        requested,
        established,
        failed: out.result.sessions_failed,
        held,
        setup_s: out.setup.as_secs_f64(),
        rss_before_kib: out.rss_before,
        rss_after_kib: out.rss_after_hold,
        rss_per_session_kib: per_session,
        probe: out.result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_distinct_and_in_range() {
        let m = assign_rooms(50, 100, 10, 7);
        assert_eq!(m.len(), 50);
        for rooms in &m {
            assert_eq!(rooms.len(), 10);
            let mut sorted = rooms.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 10);
            assert!(rooms.iter().all(|&r| r < 100));
        }
        // More rooms per client than rooms: every room once.
        assert_eq!(assign_rooms(1, 3, 10, 1)[0].len(), 3);
    }

    #[test]
    fn schedule_follows_the_rate() {
        let plan = Plan {
            target: Target::parse("http://127.0.0.1:1/b").unwrap(),
            publish_target: Target::parse("http://127.0.0.1:1/b").unwrap(),
            transport: Transport::Websocket,
            clients: 1,
            rooms: 1,
            rooms_per_client: 1,
            publishers: 1,
            rate: 1000.0,
            pause: Duration::from_millis(10),
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            message_size: 1,
            server_pid: None,
            source_addrs: 1,
            connect_concurrency: 1,
            progress: false,
            label: String::new(),
            idle_hold: None,
            channel_root: None,
            external_probes: None,
            redis_pid: None,
            message_ids: false,
            processes: 1,
            threads_arg: None,
            threads: 2,
            held_after: 1,
        };
        assert_eq!(plan.schedule(), (10, Duration::from_millis(10)));
        let slow = Plan { rate: 10.0, ..plan.clone() };
        assert_eq!(slow.schedule(), (1, Duration::from_millis(100)));
        let fast = Plan { rate: 123_456.0, ..plan };
        let (batch, pause) = fast.schedule();
        assert_eq!(batch, 1235);
        assert!((batch as f64 / pause.as_secs_f64() - 123_456.0).abs() < 1.0);
    }

    #[test]
    fn steps_are_judged_against_the_bounds() {
        let b = RampBounds {
            start: 1.0,
            factor: 2.0,
            steps: 3,
            refine: 0,
            patience: 2,
            p99_bound_ms: 50.0,
            loss_bound: 0.001,
        };
        let mut r = StepResult {
            offered_msgs_per_sec: 100.0,
            publish_rate: 100.0,
            ..StepResult::default()
        };
        r.counts = Counts { expected: 10_000, delivered: 10_000, ..Counts::default() };
        assert_eq!(unsustained(&r, &b), None);
        r.latency.p99_ms = 51.0;
        assert!(unsustained(&r, &b).unwrap().contains("p99"));
        r.latency.p99_ms = 1.0;
        r.counts.lost = 11;
        assert!(unsustained(&r, &b).unwrap().contains("lost"));
        r.counts.lost = 10;
        assert_eq!(unsustained(&r, &b), None);
        r.publish_rate = 80.0;
        assert!(unsustained(&r, &b).unwrap().contains("generator"));
        // Measured generator usage decides when present: a busy generator
        // process or a saturated machine makes the step not count either.
        r.publish_rate = 100.0;
        r.generator = Some(GeneratorUsage {
            bound: generator_limit(100.0, 100.0, 0.95, Some(0.5)),
            ..GeneratorUsage::default()
        });
        assert!(
            unsustained(&r, &b).unwrap().contains("generator-bound: a generator process used 95%")
        );
        r.generator = Some(GeneratorUsage {
            bound: generator_limit(100.0, 100.0, 0.5, Some(0.01)),
            ..GeneratorUsage::default()
        });
        assert!(unsustained(&r, &b).unwrap().contains("machine was saturated"));
        r.generator = Some(GeneratorUsage::default());
        assert_eq!(unsustained(&r, &b), None);
    }
}
