//! faye-bench against an in-process faye-rs server: tiny, bounded runs.

use std::time::Duration;

use clap::Parser as _;
use faye_bench::{Cli, Report};
use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use tokio::sync::oneshot;

/// Starts faye-rs on a free loopback port; dropping the sender stops it.
async fn start_server() -> (String, oneshot::Sender<()>) {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let faye = FayeService::new(server, FayeOptions::default());
    let (tx, rx) = oneshot::channel::<()>();
    let addr = faye_testkit::server::serve_until(faye, async {
        let _ = rx.await;
    })
    .await;
    (format!("http://{addr}/bayeux"), tx)
}

async fn bench(args: &[&str]) -> anyhow::Result<Report> {
    let cli = Cli::parse_from(std::iter::once("faye-bench").chain(args.iter().copied()));
    let args = cli.args.expect("a run");
    tokio::time::timeout(Duration::from_secs(15), faye_bench::run(args)).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_websocket_fanout_loses_nothing() {
    let (url, _stop) = start_server().await;
    let pid = std::process::id().to_string();
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "8",
        "--duration",
        "1",
        "--rate",
        "50",
        "--drain",
        "3",
        "--server-pid",
        &pid,
        "--quiet",
    ])
    .await
    .unwrap();
    let step = &report.steps[0];
    assert_eq!(step.sessions, 8);
    assert!(step.counts.delivered > 0, "{}", report.summary());
    assert_eq!(step.counts.expected, step.published * 8, "{}", report.summary());
    assert_eq!(step.counts.lost, 0, "{}", report.summary());
    assert_eq!(step.counts.duplicated, 0);
    assert_eq!(step.counts.out_of_order, 0);
    assert_eq!(step.counts.misrouted, 0);
    assert!(step.latency.count == step.counts.delivered && step.latency.p99_ms > 0.0);
    let server = step.server.as_ref().unwrap();
    assert!(server.rss_kib > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_long_polling_chat_loses_nothing() {
    let (url, _stop) = start_server().await;
    let report = bench(&[
        "chat",
        "--url",
        &url,
        "--transport",
        "long-polling",
        "--clients",
        "10",
        "--rooms",
        "4",
        "--rooms-per-client",
        "2",
        "--publishers",
        "2",
        "--duration",
        "1",
        "--rate",
        "40",
        "--drain",
        "3",
        "--quiet",
    ])
    .await
    .unwrap();
    let step = &report.steps[0];
    assert!(step.counts.delivered > 0, "{}", report.summary());
    assert_eq!(step.counts.lost, 0, "{}", report.summary());
    assert_eq!(step.counts.duplicated + step.counts.misrouted, 0);
}

#[tokio::test]
async fn refuses_other_machines() {
    let err = bench(&["chat", "--url", "http://10.1.2.3:8000/bayeux"]).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_of_each_http_transport_get_every_probe() {
    let (url, _stop) = start_server().await;
    let pid = std::process::id().to_string();
    for transport in ["long-polling", "eventsource"] {
        let report = bench(&[
            "idle",
            "--url",
            &url,
            "--transport",
            transport,
            "--clients",
            "20",
            "--hold",
            "0.2",
            "--probes",
            "3",
            "--server-pid",
            &pid,
            "--quiet",
        ])
        .await
        .unwrap();
        assert_eq!(report.transport, transport);
        let idle = report.idle.as_ref().unwrap();
        assert_eq!((idle.established, idle.held), (20, 20), "{}", report.summary());
        assert_eq!(idle.probe.counts.delivered, 60, "{}", report.summary());
        assert!(idle.rss_per_session_kib.is_some());
        report.check_clean().unwrap();
    }
}

/// `--processes 2` re-executes the faye-bench binary as two workers; their
/// counts, histograms and CPU come back merged into one report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_spread_over_worker_processes_are_counted_once() {
    let (url, _stop) = start_server().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_faye-bench"))
        .args(["chat", "--url", &url, "--clients", "30", "--rooms", "5", "--rooms-per-client"])
        .args(["2", "--publishers", "3", "--rate", "60", "--duration", "1", "--drain", "3"])
        .args(["--processes", "2", "--threads", "1", "--quiet", "--json", "--fail-on-loss"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    let step = &report.steps[0];
    assert_eq!(step.sessions, 30);
    assert!(step.counts.delivered > 0 && step.counts.lost == 0, "{}", report.summary());
    assert_eq!(step.latency.count, step.counts.delivered);
    let generator = step.generator.as_ref().unwrap();
    // The parent and two workers, one runtime thread each.
    assert_eq!((generator.processes, generator.threads), (3, 1));
    assert!(generator.cpu_s > 0.0 && generator.cpu_s == step.generator_cpu_s);
}

#[tokio::test]
async fn the_open_files_limit_applies_per_process() {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?.to_owned();
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(100_000)
        .min(100_000);
    // More sessions than one process may open: refused before connecting, with
    // the way out named.
    let clients = (limit + 1000).to_string();
    let err = bench(&["idle", "--url", "http://127.0.0.1:9/bayeux", "--clients", &clients])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use more --processes"), "{err}");
    let err = bench(&["cluster", "--node", "http://127.0.0.1:9/b", "--processes", "2"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--processes is for"), "{err}");
}
