//! `cluster`: idle sessions spread over the nodes of one cluster (e.g. several
//! `faye serve --engine redis` on one Redis), one generator process per node,
//! since one process may hold only as many sessions as it may open files.
//!
//! This process starts a child `faye-bench idle` per node, all subscribing to
//! the same channel. Each child sets up its sessions, holds them, reads its
//! node's RSS, says `ready` on stdout and waits for `go` on stdin. Once every
//! child is ready, this process says `go` to all and publishes the probes on
//! the first node; each child then counts its deliveries and prints its report
//! as JSON. Every process stamps and reads times on `CLOCK_MONOTONIC`, so
//! latencies across processes are comparable.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use crate::report::{ClusterNode, ClusterResult, Report};
use crate::scenario::{self, Plan};
use crate::wire::Target;

/// Longest wait for a child to set up and hold its sessions.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// One node: its endpoint and, if given, its pid (`URL` or `URL@PID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) url: String,
    pub(crate) pid: Option<u32>,
}

impl Node {
    pub(crate) fn parse(spec: &str) -> anyhow::Result<Self> {
        let (url, pid) = match spec.rsplit_once('@') {
            Some((url, pid)) => {
                (url, Some(pid.parse().with_context(|| format!("bad pid in --node {spec}"))?))
            }
            None => (spec, None),
        };
        Target::parse(url)?;
        Ok(Self { url: url.to_owned(), pid })
    }
}

/// What the children are told besides their node and share of sessions.
pub(crate) struct ChildArgs {
    pub(crate) hold: f64,
    pub(crate) probes: u64,
    pub(crate) drain: f64,
    pub(crate) source_addrs: usize,
    pub(crate) connect_concurrency: usize,
}

struct Running {
    node: Node,
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Runs the scenario: `clients` sessions split evenly over `nodes`; `plan` is
/// the publisher's (its target is replaced by the first node).
pub(crate) async fn run(
    mut plan: Plan,
    nodes: Vec<Node>,
    clients: usize,
    c: ChildArgs,
) -> anyhow::Result<ClusterResult> {
    ensure!(!nodes.is_empty(), "cluster needs at least one --node");
    let exe = std::env::current_exe().context("cannot find the faye-bench executable")?;
    let root = scenario::channel_root();
    let started = Instant::now();
    let mut running = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let share = clients / nodes.len() + usize::from(i < clients % nodes.len());
        let mut cmd = Command::new(&exe);
        cmd.args(["idle", "--url", &node.url, "--clients", &share.to_string()])
            .args(["--channel-root", &root, "--external-probes", "--probes", &c.probes.to_string()])
            .args(["--hold", &c.hold.to_string(), "--drain", &c.drain.to_string()])
            .args(["--source-addrs", &c.source_addrs.to_string()])
            .args(["--connect-concurrency", &c.connect_concurrency.to_string()])
            .args(["--label", &format!("node {}", i + 1), "--json", "--quiet"]);
        if let Some(pid) = node.pid {
            cmd.args(["--server-pid", &pid.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a child faye-bench")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        running.push(Running { node: node.clone(), child, stdout });
    }

    for r in &mut running {
        let mut line = String::new();
        timeout(READY_TIMEOUT, r.stdout.read_line(&mut line))
            .await
            .with_context(|| format!("{}: not ready within {READY_TIMEOUT:?}", r.node.url))??;
        ensure!(
            line.trim() == "ready",
            "{}: the child failed before its sessions were ready (said {line:?})",
            r.node.url
        );
    }
    let ready_s = started.elapsed().as_secs_f64();
    eprintln!("cluster: {} children ready after {ready_s:.1} s; publishing", running.len());
    for r in &mut running {
        let stdin = r.child.stdin.as_mut().context("child stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }

    plan.target = Target::parse(&nodes[0].url)?;
    plan.publish_target = plan.target.clone();
    plan.channel_root = Some(root);
    let (published, begin_ns) = scenario::publish_probes(plan, clients as u64, c.probes).await?;
    ensure!(published == c.probes, "published {published} of {} probes", c.probes);

    let mut result = ClusterResult { probes: c.probes, ready_s, ..ClusterResult::default() };
    let report_timeout = Duration::from_secs_f64(c.drain + 60.0);
    let mut last = None::<u64>;
    for mut r in running {
        let mut json = String::new();
        timeout(report_timeout, r.stdout.read_to_string(&mut json))
            .await
            .with_context(|| format!("{}: no report within {report_timeout:?}", r.node.url))??;
        let status = timeout(Duration::from_secs(10), r.child.wait()).await??;
        ensure!(status.success(), "{}: the child failed ({status})", r.node.url);
        let report: Report = serde_json::from_str(&json)
            .with_context(|| format!("{}: the child's report is not JSON", r.node.url))?;
        let idle = report.idle.context("the child's report has no idle result")?;
        result.requested += idle.requested;
        result.established += idle.established;
        result.held += idle.held;
        last = last.max(idle.last_delivery_ns);
        result.nodes.push(ClusterNode { url: r.node.url, idle });
    }
    result.last_delivery_ms = last.map(|ns| ns.saturating_sub(begin_ns) as f64 / 1e6);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_parse_with_and_without_a_pid() {
        let n = Node::parse("http://127.0.0.1:8000/bayeux@123").unwrap();
        assert_eq!(n, Node { url: "http://127.0.0.1:8000/bayeux".into(), pid: Some(123) });
        assert_eq!(Node::parse("http://127.0.0.1:8000/bayeux").unwrap().pid, None);
        assert!(Node::parse("http://127.0.0.1:8000/bayeux@x").is_err());
        assert!(Node::parse("http://example.com/bayeux").is_err());
    }
}
