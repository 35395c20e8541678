//! The subscribing side of a step: a group of sessions, in this process or in
//! a worker process of its own (`--processes N`).
//!
//! A step always runs its subscribers as groups. With one process there is one
//! group, a [`LocalGroup`] in this process. With N > 1 this process re-executes
//! its own binary N times as `faye-bench worker`; each worker runs a
//! [`LocalGroup`] for its share of the sessions and talks to the parent over
//! its stdin and stdout, one JSON line each:
//!
//! 1. parent → worker: the [`GroupSpec`] (which sessions, which channels);
//! 2. worker → parent: `{"ready":…}` once every session is set up (or failed),
//!    with the members per room of the sessions that are up; then
//!    `{"progress":…}` every 100 ms (deliveries so far, for the drain);
//! 3. parent → worker: `go` when publishing begins (the worker's CPU window
//!    opens), then `stop` at the end of the drain;
//! 4. worker → parent: `{"report":…}`: its merged counts, held sessions, its
//!    latency histogram (HdrHistogram V2, base64) and its CPU time over the
//!    window; then it disconnects its sessions and exits.
//!
//! The parent keeps the publishers. Send times are on `CLOCK_MONOTONIC`, which
//! every process shares, so a worker's latencies are as good as the parent's.
//! Every wait has a timeout, and a worker that exits early fails the step.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use crate::scenario::{assign_rooms, now_ns, recv_setup};
use crate::stats::{Receiver, SharedHistogram, Tally, decode_histogram, encode_histogram};
use crate::wire::{self, HttpConn, SETUP_TIMEOUT, Target};
use crate::{Transport, procfs};

/// Longest wait for a worker to set up its sessions.
const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest wait for `go`, then for `stop`, in a worker (the parent holds idle
/// sessions up to 600 s and publishes up to 300 s per step before the drain).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1200);
/// Longest wait for a worker's report after `stop`.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Which sessions a group sets up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupSpec {
    /// The server's Bayeux endpoint.
    pub(crate) url: String,
    pub(crate) transport: Transport,
    /// The step's index of the group's first session (for source addresses).
    pub(crate) first: usize,
    /// Sessions in this group.
    pub(crate) clients: usize,
    pub(crate) rooms: usize,
    pub(crate) rooms_per_client: usize,
    /// Publishers in the step (each subscriber tracks order per publisher).
    pub(crate) publishers: usize,
    /// The channels' common prefix: room r is `<root>/r<r>`.
    pub(crate) channel_root: String,
    /// Seed of the rooms each session joins.
    pub(crate) seed: u64,
    pub(crate) source_addrs: usize,
    pub(crate) connect_concurrency: usize,
    /// A session counts as held with at least this many distinct deliveries.
    pub(crate) held_after: u64,
}

impl GroupSpec {
    /// `spec`'s sessions split into `n` groups of (nearly) equal size.
    pub(crate) fn split(&self, n: usize) -> Vec<Self> {
        let n = n.clamp(1, self.clients.max(1));
        let mut first = self.first;
        (0..n)
            .map(|i| {
                let clients = self.clients / n + usize::from(i < self.clients % n);
                let part = Self { first, clients, ..self.clone() };
                first += clients;
                part
            })
            .collect()
    }
}

/// A group's sessions once set up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GroupReady {
    /// Sessions set up.
    pub(crate) sessions: u64,
    /// Sessions that failed to set up.
    pub(crate) failed: u64,
    pub(crate) first_error: Option<String>,
    /// Per room, the sessions that are up and in it.
    pub(crate) members: Vec<u64>,
}

impl GroupReady {
    /// Adds another group's.
    pub(crate) fn merge(&mut self, other: Self) {
        self.sessions += other.sessions;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.members.len() < other.members.len() {
            self.members.resize(other.members.len(), 0);
        }
        for (m, o) in self.members.iter_mut().zip(other.members) {
            *m += o;
        }
    }
}

/// A worker process's CPU time over the step's window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct ProcessCpu {
    pub(crate) cpu_s: f64,
    /// Its runtime's worker threads.
    pub(crate) threads: usize,
}

/// What a group counted.
#[derive(Debug)]
pub(crate) struct GroupReport {
    /// All its sessions' counts, merged.
    pub(crate) tally: Tally,
    /// Sessions whose connection ended or failed during the step.
    pub(crate) dropped: u64,
    /// Sessions with at least `held_after` distinct deliveries.
    pub(crate) held: u64,
    pub(crate) histogram: Histogram<u64>,
    /// A worker's own CPU time (`None` for the group in this process, whose
    /// CPU is this process's).
    pub(crate) process: Option<ProcessCpu>,
}

/// [`GroupReport`] as a worker sends it.
#[derive(Debug, Serialize, Deserialize)]
struct WireReport {
    tally: Tally,
    dropped: u64,
    held: u64,
    /// HdrHistogram V2, base64.
    histogram: String,
    process: Option<ProcessCpu>,
}

/// One line from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WorkerLine {
    Ready(GroupReady),
    Progress { delivered: u64, dropped: u64 },
    Report(WireReport),
}

/// Live counts of a group, read by the progress line and the drain.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// What every subscriber task of a group shares.
pub(crate) struct SubShared {
    histogram: SharedHistogram,
    counters: Arc<Counters>,
    /// Room index → channel name.
    channels: Vec<String>,
    publishers: usize,
}

/// What a subscriber task returns.
struct SubOutcome {
    tally: Tally,
    dropped: bool,
}

/// A group of sessions in this process.
pub(crate) struct LocalGroup {
    shared: Arc<SubShared>,
    tasks: Vec<JoinHandle<SubOutcome>>,
    stop: watch::Sender<bool>,
    held_after: u64,
}

impl LocalGroup {
    /// Sets up the group's sessions (bounded concurrency) and returns once
    /// every one is up or failed.
    pub(crate) async fn start(spec: &GroupSpec) -> anyhow::Result<(Self, GroupReady)> {
        let target = Target::parse(&spec.url)?;
        let shared = Arc::new(SubShared {
            histogram: SharedHistogram::new(16),
            counters: Arc::default(),
            channels: (0..spec.rooms).map(|r| format!("{}/r{r}", spec.channel_root)).collect(),
            publishers: spec.publishers,
        });
        let membership = assign_rooms(
            spec.clients,
            spec.rooms,
            spec.rooms_per_client,
            spec.seed.wrapping_add(spec.first as u64),
        );
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, anyhow::Result<()>)>();
        let permits = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
        let mut tasks = Vec::with_capacity(spec.clients);
        for (idx, rooms) in membership.iter().enumerate() {
            let session = Session {
                idx,
                target: target.clone(),
                transport: spec.transport,
                source: wire::source_addr(&target, spec.source_addrs, spec.first + idx),
                rooms: rooms.clone(),
                shared: shared.clone(),
                permits: permits.clone(),
            };
            tasks.push(tokio::spawn(subscriber(session, ready_tx.clone(), stop_rx.clone())));
        }
        drop(ready_tx);
        let mut ok = vec![false; spec.clients];
        let mut ready = GroupReady { members: vec![0; spec.rooms], ..GroupReady::default() };
        while let Some((idx, result)) = ready_rx.recv().await {
            match result {
                Ok(()) => ok[idx] = true,
                Err(e) => {
                    ready.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        for (idx, rooms) in membership.iter().enumerate() {
            if ok[idx] {
                ready.sessions += 1;
                for &r in rooms {
                    ready.members[r as usize] += 1;
                }
            }
        }
        ready.failed = spec.clients as u64 - ready.sessions;
        Ok((Self { shared, tasks, stop, held_after: spec.held_after }, ready))
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Stops the sessions (each disconnects) and returns what they counted.
    pub(crate) async fn finish(self) -> GroupReport {
        let _ = self.stop.send(true);
        let mut tally = Tally::default();
        let (mut dropped, mut held) = (0, 0);
        for task in self.tasks {
            if let Ok(Ok(o)) = timeout(Duration::from_secs(10), task).await {
                tally.merge(&o.tally);
                dropped += u64::from(o.dropped);
                held += u64::from(o.tally.unique >= self.held_after);
            }
        }
        GroupReport {
            tally,
            dropped,
            held,
            histogram: self.shared.histogram.merged(),
            process: None,
        }
    }
}

/// A worker process running one group.
pub(crate) struct RemoteGroup {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    counters: Arc<Counters>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    exited: Arc<AtomicBool>,
}

enum WorkerEvent {
    Ready(GroupReady),
    Report(WireReport),
    /// Its stdout ended (or said something that is not a line of the protocol).
    Gone(String),
}

impl RemoteGroup {
    /// Starts worker `index` (`faye-bench worker`) on `spec`.
    async fn spawn(index: usize, spec: &GroupSpec, threads: Option<usize>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the faye-bench executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker");
        if let Some(t) = threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a faye-bench worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut line = serde_json::to_string(spec)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.context("cannot write to a worker")?;
        stdin.flush().await?;
        let counters = Arc::new(Counters::default());
        let exited = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::unbounded_channel();
        let (c, gone) = (counters.clone(), exited.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let why = loop {
                match lines.next_line().await {
                    Ok(Some(l)) => match serde_json::from_str::<WorkerLine>(&l) {
                        Ok(WorkerLine::Progress { delivered, dropped }) => {
                            c.delivered.store(delivered, Ordering::Relaxed);
                            c.dropped.store(dropped, Ordering::Relaxed);
                        }
                        Ok(WorkerLine::Ready(r)) => {
                            let _ = tx.send(WorkerEvent::Ready(r));
                        }
                        Ok(WorkerLine::Report(r)) => {
                            let _ = tx.send(WorkerEvent::Report(r));
                        }
                        Err(e) => break format!("said {l:?} ({e})"),
                    },
                    Ok(None) => break "exited".to_owned(),
                    Err(e) => break format!("cannot be read: {e}"),
                }
            };
            gone.store(true, Ordering::Relaxed);
            let _ = tx.send(WorkerEvent::Gone(why));
        });
        Ok(Self { index, child, stdin, counters, events, exited })
    }

    /// The next event, or an error naming the worker when it is gone, says
    /// something else, or says nothing within `wait`.
    async fn next(&mut self, wait: Duration, what: &str) -> anyhow::Result<WorkerEvent> {
        let i = self.index + 1;
        match timeout(wait, self.events.recv()).await {
            Err(_) => bail!("worker process {i}: no {what} within {wait:?}"),
            Ok(None) => bail!("worker process {i}: gone before its {what}"),
            Ok(Some(WorkerEvent::Gone(why))) => {
                let status = timeout(Duration::from_secs(5), self.child.wait())
                    .await
                    .map_or_else(|_| "still running".to_owned(), |s| format!("{s:?}"));
                bail!("worker process {i} {why} before its {what} (status: {status})")
            }
            Ok(Some(event)) => Ok(event),
        }
    }

    async fn ready(&mut self) -> anyhow::Result<GroupReady> {
        match self.next(READY_TIMEOUT, "ready").await? {
            WorkerEvent::Ready(r) => Ok(r),
            _ => bail!("worker process {}: a report before ready", self.index + 1),
        }
    }

    async fn say(&mut self, word: &str) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .with_context(|| format!("worker process {}: cannot say {word}", self.index + 1))?;
        Ok(self.stdin.flush().await?)
    }

    /// The report the worker sends after `stop`; then waits for it to exit.
    async fn collect(mut self) -> anyhow::Result<GroupReport> {
        let i = self.index + 1;
        let WorkerEvent::Report(r) = self.next(REPORT_TIMEOUT, "report").await? else {
            bail!("worker process {i}: ready twice");
        };
        let status = timeout(Duration::from_secs(15), self.child.wait())
            .await
            .with_context(|| format!("worker process {i} did not exit"))??;
        ensure!(status.success(), "worker process {i} failed ({status})");
        Ok(GroupReport {
            tally: r.tally,
            dropped: r.dropped,
            held: r.held,
            histogram: decode_histogram(&r.histogram)
                .with_context(|| format!("worker process {i}"))?,
            process: r.process,
        })
    }
}

/// A step's subscribers: one local group, or one group per worker process.
pub(crate) enum Groups {
    Local(LocalGroup),
    Remote(Vec<RemoteGroup>),
}

impl Groups {
    /// Sets up `spec`'s sessions in this process (`processes` = 1) or over
    /// `processes` workers (each with `threads` runtime threads if given),
    /// and returns once every group is ready, with their sessions merged.
    pub(crate) async fn start(
        spec: &GroupSpec,
        processes: usize,
        threads: Option<usize>,
    ) -> anyhow::Result<(Self, GroupReady)> {
        if processes <= 1 {
            let (group, ready) = LocalGroup::start(spec).await?;
            return Ok((Self::Local(group), ready));
        }
        let mut workers = Vec::new();
        for (i, part) in spec.split(processes).iter().enumerate() {
            workers.push(RemoteGroup::spawn(i, part, threads).await?);
        }
        let mut ready = GroupReady::default();
        for w in &mut workers {
            ready.merge(w.ready().await?);
        }
        Ok((Self::Remote(workers), ready))
    }

    /// Every group's live counters.
    pub(crate) fn counters(&self) -> Vec<Arc<Counters>> {
        match self {
            Self::Local(g) => vec![g.counters()],
            Self::Remote(ws) => ws.iter().map(|w| w.counters.clone()).collect(),
        }
    }

    /// An error if a worker process is gone.
    pub(crate) fn check_alive(&self) -> anyhow::Result<()> {
        if let Self::Remote(ws) = self
            && let Some(w) = ws.iter().find(|w| w.exited.load(Ordering::Relaxed))
        {
            bail!("worker process {} exited during the step", w.index + 1);
        }
        Ok(())
    }

    /// Publishing begins: the workers' CPU windows open.
    pub(crate) async fn go(&mut self) -> anyhow::Result<()> {
        if let Self::Remote(ws) = self {
            for w in ws {
                w.say("go").await?;
            }
        }
        Ok(())
    }

    /// Stops every group and returns their reports.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<GroupReport>> {
        match self {
            Self::Local(g) => Ok(vec![g.finish().await]),
            Self::Remote(mut ws) => {
                // Stop all at once: their CPU windows close together.
                for w in &mut ws {
                    w.say("stop").await?;
                }
                let mut out = Vec::new();
                for w in ws {
                    out.push(w.collect().await?);
                }
                Ok(out)
            }
        }
    }
}

fn emit(line: &WorkerLine) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `faye-bench worker`: runs one group for a parent (see the module docs).
/// `threads` is its runtime's worker-thread count.
pub(crate) async fn worker_main(threads: usize) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let spec = timeout(Duration::from_secs(60), stdin.next_line())
        .await
        .context("no group spec on stdin within 60 s")??
        .context("stdin ended before the group spec")?;
    let spec: GroupSpec = serde_json::from_str(&spec).context("a group spec that is not JSON")?;
    let (group, ready) = LocalGroup::start(&spec).await?;
    emit(&WorkerLine::Ready(ready))?;
    let counters = group.counters();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let line = WorkerLine::Progress {
                delivered: counters.delivered.load(Ordering::Relaxed),
                dropped: counters.dropped.load(Ordering::Relaxed),
            };
            if emit(&line).is_err() {
                break;
            }
        }
    });
    let mut cpu_at_go = None;
    loop {
        let line = timeout(COMMAND_TIMEOUT, stdin.next_line())
            .await
            .context("no command from the parent in time")??
            .context("the parent went away")?;
        match line.trim() {
            "go" => cpu_at_go = procfs::cpu_seconds(None),
            "stop" => break,
            other => bail!("unknown command from the parent: {other:?}"),
        }
    }
    let cpu_s = match (cpu_at_go, procfs::cpu_seconds(None)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let report = group.finish().await;
    progress.abort();
    emit(&WorkerLine::Report(WireReport {
        tally: report.tally,
        dropped: report.dropped,
        held: report.held,
        histogram: encode_histogram(&report.histogram)?,
        process: Some(ProcessCpu { cpu_s, threads }),
    }))
}

/// One subscribing session's setup.
struct Session {
    idx: usize,
    target: Target,
    transport: Transport,
    source: Option<IpAddr>,
    rooms: Vec<u32>,
    shared: Arc<SubShared>,
    permits: Arc<Semaphore>,
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The `"interval"` of a connect reply's advice, ms.
fn advice_interval_ms(reply: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(reply, b"\"interval\":")? + b"\"interval\":".len();
    let digits: Vec<u8> = reply[at..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Tells the group how a session's setup went, letting go of its channel:
/// the session's state if it is up.
fn announce<T>(
    ready: mpsc::UnboundedSender<(usize, anyhow::Result<()>)>,
    idx: usize,
    setup: anyhow::Result<T>,
) -> Option<T> {
    let (result, state) = match setup {
        Ok(state) => (Ok(()), Some(state)),
        Err(e) => (Err(e), None),
    };
    let _ = ready.send((idx, result));
    state
}

/// One subscribing session: set up, then count deliveries until stopped.
async fn subscriber(
    s: Session,
    ready: mpsc::UnboundedSender<(usize, anyhow::Result<()>)>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let Session { idx, target, transport, source, rooms, shared, permits } = s;
    let channels: Vec<&str> = rooms.iter().map(|&r| shared.channels[r as usize].as_str()).collect();
    let mut receiver = Receiver::new(shared.publishers, rooms.clone());
    let mut dropped = false;
    let on_frame = |frame: &[u8], receiver: &mut Receiver| {
        let now = now_ns();
        let before = receiver.tally.unique;
        receiver.tally.malformed += wire::scan_deliveries(frame, |d| receiver.on_delivery(d, now));
        shared.counters.delivered.fetch_add(receiver.tally.unique - before, Ordering::Relaxed);
        shared.histogram.record(idx, &mut receiver.pending_us);
    };
    match transport {
        Transport::Websocket => {
            let setup = async {
                let _permit = permits.acquire().await?;
                let mut ws = wire::ws_connect(&target, source).await?;
                wire::ws_send(&mut ws, wire::handshake_json("websocket")).await?;
                let reply = recv_setup(&mut ws).await?;
                let client_id = wire::parse_handshake(&reply)?;
                wire::ws_send(&mut ws, wire::subscribe_json(&client_id, &channels)).await?;
                wire::check_subscribed(&recv_setup(&mut ws).await?, channels.len())?;
                wire::ws_send(&mut ws, wire::connect_json(&client_id, "websocket", 0)).await?;
                anyhow::Ok((ws, client_id))
            };
            let Some((mut ws, client_id)) = announce(ready, idx, setup.await) else {
                return SubOutcome { tally: receiver.tally, dropped: false };
            };
            let mut connects = 0u64;
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    frame = wire::ws_recv(&mut ws) => match frame {
                        Ok(Some(frame)) => {
                            on_frame(&frame, &mut receiver);
                            if wire::has_connect_reply(&frame) {
                                if wire::count_replies(&frame).1 > 0 {
                                    dropped = true;
                                    break;
                                }
                                connects += 1;
                                let msg = wire::connect_json(&client_id, "websocket", connects);
                                if wire::ws_send(&mut ws, msg).await.is_err() {
                                    dropped = true;
                                    break;
                                }
                            }
                        }
                        Ok(None) | Err(_) => {
                            dropped = true;
                            break;
                        }
                    }
                }
            }
            if !dropped {
                let _ = timeout(Duration::from_secs(2), async {
                    let _ = wire::ws_send(&mut ws, wire::disconnect_json(&client_id)).await;
                    let _ = ws.close(None).await;
                    // Read until the server closes, so that it has seen the disconnect.
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
        }
        Transport::LongPolling => {
            let setup = async {
                let _permit = permits.acquire().await?;
                let mut http = HttpConn::connect(&target, source).await?;
                let reply =
                    timeout(SETUP_TIMEOUT, http.post(&wire::handshake_json("long-polling")))
                        .await??;
                let client_id = wire::parse_handshake(&reply)?;
                let reply =
                    timeout(SETUP_TIMEOUT, http.post(&wire::subscribe_json(&client_id, &channels)))
                        .await??;
                wire::check_subscribed(&reply, channels.len())?;
                anyhow::Ok((http, client_id))
            };
            let Some((mut http, client_id)) = announce(ready, idx, setup.await) else {
                return SubOutcome { tally: receiver.tally, dropped: false };
            };
            let mut connects = 0u64;
            loop {
                let msg = wire::connect_json(&client_id, "long-polling", connects);
                connects += 1;
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    body = http.post(&msg) => match body {
                        Ok(body) => {
                            on_frame(&body, &mut receiver);
                            if wire::count_replies(&body).1 > 0 {
                                dropped = true;
                                break;
                            }
                        }
                        Err(_) => {
                            dropped = true;
                            break;
                        }
                    }
                }
            }
            drop(http);
            if !dropped {
                disconnect_over_http(&target, source, &permits, &client_id).await;
            }
        }
        Transport::EventSource => {
            // Handshake, subscribe and a first connect (which an `eventsource`
            // connect answers at once) by POST, then the stream on the same
            // connection: one socket per session while it is held.
            let setup = async {
                let _permit = permits.acquire().await?;
                let mut http = HttpConn::connect(&target, source).await?;
                let reply = timeout(SETUP_TIMEOUT, http.post(&wire::handshake_json("eventsource")))
                    .await??;
                let client_id = wire::parse_handshake(&reply)?;
                let reply =
                    timeout(SETUP_TIMEOUT, http.post(&wire::subscribe_json(&client_id, &channels)))
                        .await??;
                wire::check_subscribed(&reply, channels.len())?;
                let reply = timeout(
                    SETUP_TIMEOUT,
                    http.post(&wire::connect_json(&client_id, "eventsource", 0)),
                )
                .await??;
                ensure!(wire::count_replies(&reply) == (1, 0), "connect failed: {reply:?}");
                let path = format!("{}/{client_id}", target.path.trim_end_matches('/'));
                let stream = timeout(SETUP_TIMEOUT, http.event_stream(&path)).await??;
                let interval = advice_interval_ms(&reply).unwrap_or(10_000).clamp(1000, 60_000);
                anyhow::Ok((http, stream, client_id, Duration::from_millis(interval)))
            };
            let Some((http, mut stream, client_id, interval)) = announce(ready, idx, setup.await)
            else {
                return SubOutcome { tally: receiver.tally, dropped: false };
            };
            // As Faye's client: connect again `interval` after each connect
            // reply (on a connection of its own: the stream holds this one).
            let mut next_connect = Instant::now() + interval;
            let mut connects = 1u64;
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    lines = stream.next_lines() => match lines {
                        Ok(Some(lines)) => on_frame(&lines, &mut receiver),
                        Ok(None) | Err(_) => {
                            dropped = true;
                            break;
                        }
                    },
                    _ = sleep(next_connect.saturating_duration_since(Instant::now())) => {
                        let n = connects;
                        let renewed = async {
                            let _permit = permits.acquire().await?;
                            let mut c = HttpConn::connect(&target, source).await?;
                            let msg = wire::connect_json(&client_id, "eventsource", n);
                            let reply = timeout(SETUP_TIMEOUT, c.post(&msg)).await??;
                            ensure!(wire::count_replies(&reply).1 == 0, "connect failed");
                            anyhow::Ok(())
                        };
                        connects += 1;
                        if renewed.await.is_err() {
                            dropped = true;
                            break;
                        }
                        next_connect = Instant::now() + interval;
                    }
                }
            }
            drop(stream);
            drop(http);
            if !dropped {
                disconnect_over_http(&target, source, &permits, &client_id).await;
            }
        }
    }
    if dropped {
        shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
    SubOutcome { tally: receiver.tally, dropped }
}

/// A `/meta/disconnect` on a new connection (the session's own is held).
async fn disconnect_over_http(
    target: &Target,
    source: Option<IpAddr>,
    permits: &Semaphore,
    client_id: &str,
) {
    let _ = timeout(Duration::from_secs(2), async {
        let _permit = permits.acquire().await?;
        let mut http = HttpConn::connect(target, source).await?;
        http.post(&wire::disconnect_json(client_id)).await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(clients: usize) -> GroupSpec {
        GroupSpec {
            url: "http://127.0.0.1:1/bayeux".into(),
            transport: Transport::EventSource,
            first: 0,
            clients,
            rooms: 3,
            rooms_per_client: 2,
            publishers: 1,
            channel_root: "/bench/x".into(),
            seed: 1,
            source_addrs: 8,
            connect_concurrency: 10,
            held_after: 3,
        }
    }

    #[test]
    fn sessions_split_evenly_and_contiguously() {
        let parts = spec(10).split(3);
        assert_eq!(
            parts.iter().map(|p| (p.first, p.clients)).collect::<Vec<_>>(),
            [(0, 4), (4, 3), (7, 3)]
        );
        // Never more groups than sessions, never none.
        assert_eq!(spec(2).split(5).len(), 2);
        assert_eq!(spec(5).split(0).len(), 1);
    }

    #[test]
    fn ready_groups_merge() {
        let mut a = GroupReady { sessions: 3, failed: 1, first_error: None, members: vec![1, 2] };
        a.merge(GroupReady {
            sessions: 2,
            failed: 0,
            first_error: Some("x".into()),
            members: vec![1, 0, 4],
        });
        assert_eq!((a.sessions, a.failed, a.first_error.as_deref()), (5, 1, Some("x")));
        assert_eq!(a.members, vec![2, 2, 4]);
    }

    #[test]
    fn the_protocol_lines_round_trip() {
        let spec_json = serde_json::to_string(&spec(4)).unwrap();
        assert!(spec_json.contains("\"transport\":\"eventsource\""), "{spec_json}");
        let back: GroupSpec = serde_json::from_str(&spec_json).unwrap();
        assert_eq!(back.clients, 4);
        let line =
            serde_json::to_string(&WorkerLine::Progress { delivered: 7, dropped: 1 }).unwrap();
        assert_eq!(line, r#"{"progress":{"delivered":7,"dropped":1}}"#);
        let mut h = crate::stats::new_histogram();
        h.record(1500).unwrap();
        let report = WorkerLine::Report(WireReport {
            tally: Tally { unique: 9, ..Tally::default() },
            dropped: 0,
            held: 2,
            histogram: encode_histogram(&h).unwrap(),
            process: Some(ProcessCpu { cpu_s: 0.5, threads: 2 }),
        });
        let text = serde_json::to_string(&report).unwrap();
        let Ok(WorkerLine::Report(r)) = serde_json::from_str(&text) else { panic!("{text}") };
        assert_eq!((r.tally.unique, r.held), (9, 2));
        assert_eq!(decode_histogram(&r.histogram).unwrap().max(), h.max());
    }

    #[test]
    fn connect_advice_gives_the_interval() {
        let reply = br#"[{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","interval":60000,"timeout":0}}]"#;
        assert_eq!(advice_interval_ms(reply), Some(60_000));
        assert_eq!(advice_interval_ms(b"[]"), None);
    }
}
