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
