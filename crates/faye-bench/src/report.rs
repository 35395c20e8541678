//! The run report: JSON for machines, a text summary and an SVG for people.

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::stats::{Counts, Latency};

/// Everything one `faye-bench` invocation measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Free-form name of the server or run (`--label`).
    pub label: String,
    /// `chat`, `rooms`, `fanout` or `idle`.
    pub scenario: String,
    /// `websocket` or `long-polling` (the subscribers' transport).
    pub transport: String,
    /// The server's URL.
    pub url: String,
    /// When the run started, seconds since the Unix epoch.
    pub unix_time: u64,
    /// The workload.
    pub settings: Settings,
    /// One step for a fixed-rate run; one per publish rate tried when ramping.
    pub steps: Vec<StepResult>,
    /// The ramp's outcome (saturation runs only).
    pub saturation: Option<Saturation>,
    /// The idle scenario's outcome.
    pub idle: Option<IdleResult>,
    /// The cluster scenario's outcome.
    #[serde(default)]
    pub cluster: Option<ClusterResult>,
}

/// The workload of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Subscribing sessions.
    pub clients: usize,
    /// Channels published to.
    pub rooms: usize,
    /// Channels each session subscribes to.
    pub rooms_per_client: usize,
    /// Publishing WebSocket connections.
    pub publishers: usize,
    /// Bytes of padding text per message.
    pub message_size: usize,
    /// Seconds of publishing per step.
    pub duration_s: f64,
    /// Publish rate of a fixed run, or the ramp's first rate (messages/s).
    pub rate: f64,
    /// Ramp: factor between steps.
    pub ramp_factor: Option<f64>,
    /// Ramp: p99 bound in ms for a step to count as sustained.
    pub p99_bound_ms: Option<f64>,
    /// Source addresses (127.0.0.x) the sessions were spread over.
    pub source_addrs: usize,
}

/// One fixed-rate publishing period and what it produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// Scheduled publish rate, messages/s.
    pub offered_msgs_per_sec: f64,
    /// Deliveries/s the schedule asks for (rate × mean members per message).
    pub offered_deliveries_per_sec: f64,
    /// Messages sent.
    pub published: u64,
    /// Publish replies with `successful:false`.
    pub publish_failed: u64,
    /// Messages sent per second of the publishing period, as achieved.
    pub publish_rate: f64,
    /// Worst lateness of a batch against its schedule, ms (the generator's own
    /// lag: large values mean the load generator, not the server, was the limit).
    pub max_schedule_lag_ms: f64,
    /// Subscribing sessions set up.
    pub sessions: u64,
    /// Sessions that failed to set up.
    pub sessions_failed: u64,
    /// Sessions whose connection ended or failed during the run.
    pub sessions_dropped: u64,
    /// Delivery accounting.
    pub counts: Counts,
    /// Distinct deliveries per second, from the first publish to the last delivery.
    pub deliveries_per_sec: f64,
    /// That window, seconds.
    pub elapsed_s: f64,
    /// Publish-to-delivery latency.
    pub latency: Latency,
    /// The server's usage (with `--server-pid`).
    pub server: Option<ServerUsage>,
    /// The usage of the Redis the server uses (with `--redis-pid`); its
    /// `deliveries_per_cpu_s` counts the same deliveries.
    #[serde(default)]
    pub redis: Option<ServerUsage>,
    /// The load generator's CPU time over the window, seconds (every process of
    /// it: the publishing parent and its worker processes).
    pub generator_cpu_s: f64,
    /// The load generator's processes and whether it, rather than the server,
    /// was the limit (absent in reports written before it was measured).
    #[serde(default)]
    pub generator: Option<GeneratorUsage>,
    /// Ramp only: whether the step met the loss and p99 bounds.
    pub sustained: Option<bool>,
}

/// The load generator over a step: its processes, how busy the busiest was,
/// how much of the machine was left idle, and whether it was the limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorUsage {
    /// Processes: the parent (publishers) plus its workers (subscribers), or
    /// 1 when one process does both.
    pub processes: usize,
    /// Worker threads of each process's runtime.
    pub threads: usize,
    /// CPU time of all of them over the window (user + system), seconds.
    pub cpu_s: f64,
    /// The busiest process's CPU-seconds / (window × its threads): 1.0 means
    /// every thread it has was busy the whole window.
    pub busiest_share: f64,
    /// The share of the machine's CPU time left idle over the window
    /// (`/proc/stat`, idle + iowait, all CPUs).
    pub machine_idle_share: Option<f64>,
    /// Why the generator, not the server, was the limit of this step (see
    /// [`generator_limit`]); `None` if it was not.
    pub bound: Option<String>,
}

/// A step is generator-bound below this share of its publish schedule.
pub const SCHEDULE_KEPT: f64 = 0.9;
/// A step is generator-bound when a generator process used at least this
/// share of the CPU its threads could have.
pub const BUSY_PROCESS: f64 = 0.9;
/// A step ran on a saturated machine when less than this share of its CPU
/// time was idle.
pub const MACHINE_IDLE: f64 = 0.05;

/// Why a step was generator-bound, if it was: the schedule was not kept
/// (`publish_rate` < 90% of `offered`), a generator process was ≥ 90% busy, or
/// the machine had < 5% idle CPU left (server and generator sharing it).
pub fn generator_limit(
    publish_rate: f64,
    offered: f64,
    busiest_share: f64,
    machine_idle_share: Option<f64>,
) -> Option<String> {
    if offered > 0.0 && publish_rate < SCHEDULE_KEPT * offered {
        return Some(format!(
            "the generator published only {publish_rate:.0} of {offered:.0} msg/s"
        ));
    }
    if busiest_share >= BUSY_PROCESS {
        return Some(format!(
            "a generator process used {:.0}% of its threads' CPU",
            busiest_share * 100.0
        ));
    }
    if let Some(idle) = machine_idle_share.filter(|&i| i < MACHINE_IDLE) {
        return Some(format!(
            "the machine was saturated ({:.1}% idle CPU; server and generator share it)",
            idle * 100.0
        ));
    }
    None
}

impl StepResult {
    /// Why the generator was the limit of this step, if it was. Reports from
    /// before [`GeneratorUsage`] existed are judged on the schedule alone.
    pub fn generator_bound(&self) -> Option<String> {
        match &self.generator {
            Some(g) => g.bound.clone(),
            None => generator_limit(self.publish_rate, self.offered_msgs_per_sec, 0.0, None),
        }
    }
}

/// The server process's resource use over a step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    /// Its pid.
    pub pid: u32,
    /// VmRSS at the end, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS over its life), KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time during the step, seconds.
    pub cpu_s: f64,
    /// Deliveries per second of server CPU time.
    pub deliveries_per_cpu_s: f64,
}

/// The result of ramping the publish rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saturation {
    /// Highest deliveries/s of a sustained step (0 if none was).
    pub max_sustained_deliveries_per_sec: f64,
    /// Index in `steps` of that step.
    pub step: Option<usize>,
    /// Why the ramp stopped.
    pub stop_reason: String,
}

/// What the idle scenario held.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleResult {
    /// Sessions asked for.
    pub requested: u64,
    /// Sessions handshaken, subscribed and connected.
    pub established: u64,
    /// Sessions that failed to set up.
    pub failed: u64,
    /// Sessions that received every probe message after the hold.
    pub held: u64,
    /// Seconds to set all sessions up.
    pub setup_s: f64,
    /// Server VmRSS before the sessions, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server VmRSS with the sessions held, KiB.
    pub rss_after_kib: Option<u64>,
    /// (after − before) / established, KiB.
    pub rss_per_session_kib: Option<f64>,
    /// The probe publishes: one delivery per session per probe expected.
    pub probe: StepResult,
    /// When the last probe delivery arrived, on `CLOCK_MONOTONIC` (ns).
    #[serde(default)]
    pub last_delivery_ns: Option<u64>,
}

/// What the cluster scenario measured: idle sessions spread over several nodes
/// of one cluster, one generator process per node, then probes published on the
/// first node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterResult {
    /// Each node's URL and what its generator process measured (its RSS is
    /// that node's).
    pub nodes: Vec<ClusterNode>,
    /// Sessions asked for, over all nodes.
    pub requested: u64,
    /// Sessions set up, over all nodes.
    pub established: u64,
    /// Sessions that received every probe, over all nodes.
    pub held: u64,
    /// Probes published (one delivery per session each).
    pub probes: u64,
    /// Seconds until every generator process had set up and held its sessions.
    pub ready_s: f64,
    /// From the first probe's publish to the last delivery on any node, ms.
    pub last_delivery_ms: Option<f64>,
}

/// One node of a cluster run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The node's Bayeux endpoint.
    pub url: String,
    /// Its sessions, memory and probe deliveries.
    pub idle: IdleResult,
}

impl Report {
    /// The step that represents the run: the only one, or the ramp's best
    /// sustained step (else its first).
    pub fn headline(&self) -> Option<&StepResult> {
        if let Some(i) = self.saturation.as_ref().and_then(|s| s.step) {
            return self.steps.get(i);
        }
        self.steps.first().or(self.idle.as_ref().map(|i| &i.probe))
    }

    /// An error if a fixed-rate or idle run lost, duplicated or misrouted a
    /// delivery, or a session failed or dropped. Ramp steps past saturation may
    /// lose messages by design and are not checked.
    pub fn check_clean(&self) -> anyhow::Result<()> {
        let steps: Vec<&StepResult> = match (&self.idle, &self.saturation) {
            (Some(idle), _) => vec![&idle.probe],
            (None, Some(_)) => self.steps.iter().filter(|s| s.sustained == Some(true)).collect(),
            (None, None) => self.steps.iter().collect(),
        };
        for s in steps {
            let c = &s.counts;
            anyhow::ensure!(
                c.lost == 0 && c.duplicated == 0 && c.misrouted == 0 && c.malformed == 0,
                "{}: {} lost, {} duplicated, {} misrouted, {} malformed",
                self.label,
                c.lost,
                c.duplicated,
                c.misrouted,
                c.malformed
            );
            anyhow::ensure!(
                s.sessions_failed == 0 && s.sessions_dropped == 0,
                "{}: {} sessions failed, {} dropped",
                self.label,
                s.sessions_failed,
                s.sessions_dropped
            );
            anyhow::ensure!(c.delivered > 0, "{}: nothing was delivered", self.label);
        }
        if let Some(cluster) = &self.cluster {
            for node in &cluster.nodes {
                let report = Self { idle: Some(node.idle.clone()), cluster: None, ..self.clone() };
                report.check_clean().with_context(|| format!("node {}", node.url))?;
            }
        }
        if let Some(idle) = &self.idle {
            anyhow::ensure!(
                idle.held == idle.requested,
                "{}: {} of {} idle sessions held",
                self.label,
                idle.held,
                idle.requested
            );
        }
        Ok(())
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} | {} over {} | {} clients, {} rooms x {}/client, {} publishers, {} B messages",
            self.label,
            self.scenario,
            self.transport,
            self.settings.clients,
            self.settings.rooms,
            self.settings.rooms_per_client,
            self.settings.publishers,
            self.settings.message_size
        );
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                s,
                "  idle: {}/{} sessions established ({} failed) in {:.1} s, {} held (got every probe)",
                idle.established, idle.requested, idle.failed, idle.setup_s, idle.held
            );
            if let (Some(b), Some(a)) = (idle.rss_before_kib, idle.rss_after_kib) {
                let _ = writeln!(
                    s,
                    "  server RSS {} KiB -> {} KiB: {:.2} KiB per session",
                    b,
                    a,
                    idle.rss_per_session_kib.unwrap_or(0.0)
                );
            }
            step_lines(&mut s, &idle.probe);
            return s;
        }
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                s,
                "  cluster: {} nodes, {}/{} sessions established, {} held (got all {} probes); all ready after {:.1} s",
                c.nodes.len(),
                c.established,
                c.requested,
                c.held,
                c.probes,
                c.ready_s
            );
            if let Some(ms) = c.last_delivery_ms {
                let _ =
                    writeln!(s, "  first probe published -> last delivery on any node: {ms:.0} ms");
            }
            for n in &c.nodes {
                let i = &n.idle;
                let _ = writeln!(
                    s,
                    "  {}: {}/{} held, RSS {} -> {} KiB ({:.2} KiB per session), probe p50 {:.1} ms, max {:.1} ms",
                    n.url,
                    i.held,
                    i.requested,
                    i.rss_before_kib.unwrap_or(0),
                    i.rss_after_kib.unwrap_or(0),
                    i.rss_per_session_kib.unwrap_or(0.0),
                    i.probe.latency.p50_ms,
                    i.probe.latency.max_ms
                );
            }
            return s;
        }
        for (i, step) in self.steps.iter().enumerate() {
            if self.steps.len() > 1 {
                let mark = match step.sustained {
                    Some(true) => "ok",
                    Some(false) => "FAIL",
                    None => "",
                };
                let bound =
                    if step.generator_bound().is_some() { " (generator-bound)" } else { "" };
                let _ = writeln!(
                    s,
                    "  step {i}: offered {:.0} msg/s {mark}{bound}",
                    step.offered_msgs_per_sec
                );
            }
            step_lines(&mut s, step);
        }
        if let Some(sat) = &self.saturation {
            let _ = writeln!(
                s,
                "  saturation: max sustained {:.0} deliveries/s (stopped: {})",
                sat.max_sustained_deliveries_per_sec, sat.stop_reason
            );
        }
        s
    }
}

fn step_lines(s: &mut String, r: &StepResult) {
    let c = &r.counts;
    let _ = writeln!(
        s,
        "    published {} ({:.0}/s, {} failed, lag max {:.1} ms) | delivered {}/{} ({:.0}/s) lost {} dup {} ooo {} misrouted {}",
        r.published,
        r.publish_rate,
        r.publish_failed,
        r.max_schedule_lag_ms,
        c.delivered,
        c.expected,
        r.deliveries_per_sec,
        c.lost,
        c.duplicated,
        c.out_of_order,
        c.misrouted
    );
    let l = &r.latency;
    let _ = writeln!(
        s,
        "    latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} | sessions {} (failed {}, dropped {})",
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        r.sessions,
        r.sessions_failed,
        r.sessions_dropped
    );
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "    server pid {}: RSS {} KiB (peak {}), CPU {:.2} s, {:.0} deliveries per CPU-second | generator CPU {:.2} s",
            sv.pid,
            sv.rss_kib,
            sv.peak_rss_kib,
            sv.cpu_s,
            sv.deliveries_per_cpu_s,
            r.generator_cpu_s
        );
    }
    if let Some(g) = &r.generator {
        let _ = writeln!(
            s,
            "    generator: {} process(es) x {} threads, CPU {:.2} s, busiest process {:.0}% of its threads, machine idle {} | {}",
            g.processes,
            g.threads,
            g.cpu_s,
            g.busiest_share * 100.0,
            g.machine_idle_share.map_or_else(|| "?".to_owned(), |i| format!("{:.1}%", i * 100.0)),
            g.bound
                .as_deref()
                .map_or_else(|| "not the limit".to_owned(), |b| format!("GENERATOR-BOUND: {b}"))
        );
    } else if let Some(b) = r.generator_bound() {
        let _ = writeln!(s, "    GENERATOR-BOUND: {b}");
    }
    if let Some(rd) = &r.redis {
        let _ = writeln!(
            s,
            "    redis pid {}: RSS {} KiB, CPU {:.2} s, {:.0} deliveries per CPU-second",
            rd.pid, rd.rss_kib, rd.cpu_s, rd.deliveries_per_cpu_s
        );
    }
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&x| x >= v * 0.999_999).unwrap_or(10.0 * p)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// x position on the percentile axis: log10(1 / (1 - p)), capped at 99.999 %.
fn pct_x(p: f64) -> f64 {
    let p = (p / 100.0).min(0.999_99);
    -(1.0 - p).log10()
}

/// An SVG page: the latency distribution of each report's headline step, the
/// ramp (delivered vs offered) when there is one, and the summary text.
pub fn svg(title: &str, reports: &[(String, Report)]) -> String {
    let width = 900.0;
    let (left, right, plot_h) = (70.0, 50.0, 300.0);
    let plot_w = width - left - right;
    let has_ramp = reports.iter().any(|(_, r)| r.steps.len() > 1);
    let text_lines: Vec<(usize, String)> = reports
        .iter()
        .enumerate()
        .flat_map(|(i, (label, r))| {
            std::iter::once((i, label.clone())).chain(
                r.summary()
                    .lines()
                    .skip(1)
                    .map(|l| (i, l.trim_end().to_owned()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let top1 = 60.0;
    let top2 = top1 + plot_h + 70.0;
    let text_top = if has_ramp { top2 + plot_h + 70.0 } else { top2 };
    let height = text_top + 16.0 * text_lines.len() as f64 + 20.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );

    // Panel 1: latency by percentile.
    let series: Vec<(usize, &Latency)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.headline().map(|h| (i, &h.latency)))
        .collect();
    let y_max = nice_ceil(
        series.iter().flat_map(|(_, l)| l.distribution.iter().map(|p| p.1)).fold(0.0, f64::max),
    );
    let x_max = 5.0;
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-weight="bold">Latency by percentile (headline step), ms</text>"#,
        top1 - 10.0
    );
    axes(&mut s, left, top1, plot_w, plot_h, y_max, "ms");
    for k in 0..=5 {
        let x = left + plot_w * k as f64 / x_max;
        let label = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"][k];
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top1 + plot_h,
            top1 + plot_h + 16.0
        );
    }
    for (i, l) in &series {
        let pts: Vec<String> = l
            .distribution
            .iter()
            .map(|&(p, v)| {
                let x = left + plot_w * (pct_x(p) / x_max).min(1.0);
                let y = top1 + plot_h * (1.0 - (v / y_max).min(1.0));
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            pts.join(" ")
        );
    }
    legend(&mut s, reports, left + plot_w - 260.0, top1 + 10.0);

    // Panel 2: the ramp.
    if has_ramp {
        let rate_max = nice_ceil(
            reports
                .iter()
                .flat_map(|(_, r)| {
                    r.steps
                        .iter()
                        .flat_map(|st| [st.offered_deliveries_per_sec, st.deliveries_per_sec])
                })
                .fold(0.0, f64::max),
        );
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="{}" font-weight="bold">Ramp: deliveries/s achieved (solid) vs offered (x axis); hollow = not sustained</text>"#,
            top2 - 10.0
        );
        axes(&mut s, left, top2, plot_w, plot_h, rate_max, "/s");
        for k in 0..=5 {
            let v = rate_max * k as f64 / 5.0;
            let x = left + plot_w * k as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top2}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top2 + plot_h,
                top2 + plot_h + 16.0,
                si(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{top2}" stroke="#999" stroke-dasharray="4 4"/>"##,
            top2 + plot_h,
            left + plot_w
        );
        for (i, (_, r)) in reports.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut steps: Vec<&StepResult> = r.steps.iter().collect();
            steps.sort_by(|a, b| {
                a.offered_deliveries_per_sec.total_cmp(&b.offered_deliveries_per_sec)
            });
            let pts: Vec<(f64, f64, bool)> = steps
                .iter()
                .map(|st| {
                    (
                        left + plot_w * (st.offered_deliveries_per_sec / rate_max).min(1.0),
                        top2 + plot_h * (1.0 - (st.deliveries_per_sec / rate_max).min(1.0)),
                        st.sustained.unwrap_or(true),
                    )
                })
                .collect();
            let line: Vec<String> = pts.iter().map(|(x, y, _)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                line.join(" ")
            );
            for (x, y, ok) in pts {
                let fill = if ok { color } else { "white" };
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{fill}" stroke="{color}" stroke-width="2"/>"#
                );
            }
        }
    }

    for (n, (i, line)) in text_lines.iter().enumerate() {
        let y = text_top + 16.0 * n as f64;
        let weight = if line.starts_with(' ') { "normal" } else { "bold" };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y:.1}" font-family="monospace" font-size="11" font-weight="{weight}" fill="{}" xml:space="preserve">{}</text>"#,
            COLORS[i % COLORS.len()],
            esc(line)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn axes(s: &mut String, left: f64, top: f64, w: f64, h: f64, y_max: f64, unit: &str) {
    for k in 0..=5 {
        let v = y_max * k as f64 / 5.0;
        let y = top + h * (1.0 - k as f64 / 5.0);
        let label = if unit == "ms" { format!("{v}") } else { si(v) };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + w,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##
    );
}

fn legend(s: &mut String, reports: &[(String, Report)], x: f64, y: f64) {
    for (i, (label, _)) in reports.iter().enumerate() {
        let yy = y + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{yy:.1}" width="14" height="4" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 20.0,
            yy + 6.0,
            esc(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(3.2), 5.0);
        assert_eq!(nice_ceil(10.0), 10.0);
        assert_eq!(nice_ceil(11.0), 20.0);
        assert_eq!(nice_ceil(0.07), 0.1);
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let latency = Latency {
            count: 3,
            p50_ms: 1.0,
            distribution: vec![(0.0, 0.5), (90.0, 1.0), (100.0, 2.0)],
            ..Latency::default()
        };
        let step =
            StepResult { latency, offered_deliveries_per_sec: 10.0, ..StepResult::default() };
        let report = Report {
            label: "a<b".into(),
            scenario: "fanout".into(),
            transport: "websocket".into(),
            url: "http://127.0.0.1:1/bayeux".into(),
            unix_time: 0,
            settings: Settings {
                clients: 1,
                rooms: 1,
                rooms_per_client: 1,
                publishers: 1,
                message_size: 1,
                duration_s: 1.0,
                rate: 1.0,
                ramp_factor: None,
                p99_bound_ms: None,
                source_addrs: 1,
            },
            steps: vec![step.clone(), step],
            saturation: Some(Saturation { step: Some(1), ..Saturation::default() }),
            idle: None,
            cluster: None,
        };
        let out = svg("t", &[("a<b".into(), report.clone()), ("y".into(), report)]);
        assert!(out.starts_with("<svg") && out.ends_with("</svg>\n"));
        assert!(out.contains("a&lt;b"));
        assert_eq!(out.matches("<polyline").count(), 4);
    }
}

#[cfg(test)]
mod generator_tests {
    use super::*;

    #[test]
    fn a_step_is_generator_bound_for_each_reason() {
        assert_eq!(generator_limit(1000.0, 1000.0, 0.5, Some(0.3)), None);
        let late = generator_limit(899.0, 1000.0, 0.1, Some(0.9)).unwrap();
        assert!(late.contains("published only 899 of 1000"), "{late}");
        assert_eq!(generator_limit(900.0, 1000.0, 0.1, None), None);
        assert!(generator_limit(1000.0, 1000.0, 0.9, None).unwrap().contains("90%"));
        assert_eq!(generator_limit(1000.0, 1000.0, 0.89, None), None);
        let full = generator_limit(1000.0, 1000.0, 0.5, Some(0.049)).unwrap();
        assert!(full.contains("saturated (4.9% idle"), "{full}");
        assert_eq!(generator_limit(1000.0, 1000.0, 0.5, Some(0.05)), None);
        // No schedule (idle probes): only CPU counts.
        assert_eq!(generator_limit(5.0, 0.0, 0.1, None), None);
    }

    #[test]
    fn old_reports_load_and_are_judged_on_their_schedule() {
        let old = r#"{"offered_msgs_per_sec":100.0,"offered_deliveries_per_sec":0.0,"published":0,
            "publish_failed":0,"publish_rate":50.0,"max_schedule_lag_ms":0.0,"sessions":1,
            "sessions_failed":0,"sessions_dropped":0,
            "counts":{"expected":0,"delivered":0,"lost":0,"duplicated":0,"out_of_order":0,"misrouted":0,"malformed":0},
            "deliveries_per_sec":0.0,"elapsed_s":1.0,
            "latency":{"count":0,"mean_ms":0.0,"p50_ms":0.0,"p90_ms":0.0,"p99_ms":0.0,"p999_ms":0.0,"max_ms":0.0,"distribution":[]},
            "server":null,"generator_cpu_s":0.5,"sustained":false}"#;
        let step: StepResult = serde_json::from_str(old).unwrap();
        assert!(step.generator.is_none());
        assert!(step.generator_bound().unwrap().contains("published only 50 of 100"));
        // Every report bench/compare left in bench/results still loads.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                serde_json::from_str::<Report>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
