//! A publish costs the same Redis commands whatever the number of subscribers
//! or nodes, counted by Redis itself (`INFO commandstats`).

mod common;

use common::{poll, start};

/// A long timeout keeps the expiry collector quiet during the count.
const COLLECTOR_QUIET: Duration = Duration::from_secs(600);

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestEngine;
use faye_engine::{Channel, EncodedMessage, Engine};

/// Commands Redis ran while `n` subscribers (split over two nodes) got 10
/// publishes, without the bus readers' `XREAD`s (one per wake-up of each node,
/// whatever the subscribers).
async fn commands_for_publishes_to(n: usize) -> (BTreeMap<String, u64>, u64) {
    let a = TestEngine::fresh().await;
    let b = TestEngine::on(a.server.clone()).await;
    start(&a, COLLECTOR_QUIET);
    start(&b, COLLECTOR_QUIET);
    let channel = Channel::parse("/news").unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        let id = node.create_client().await.unwrap();
        node.subscribe(&id, &channel).await.unwrap();
        ids.push((i, id));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.server.command(&["CONFIG", "RESETSTAT"]);
    for k in 0..10 {
        let message =
            format!(r#"{{"channel":"/news","data":{{"k":{k},"pad":"{}"}}}}"#, "x".repeat(200));
        a.publish(&channel, EncodedMessage::from_json(message.as_bytes())).await.unwrap();
    }
    let mut calls: BTreeMap<String, u64> = a.server.command_calls().into_iter().collect();
    calls.remove("config|resetstat");
    let xread = calls.remove("xread").unwrap_or(0);
    // Every subscriber got all ten (node B's reader may be a moment behind).
    for (i, id) in &ids {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut got = 0;
        for _ in 0..200 {
            got += node.take_queue(id, Some(&poll())).await.unwrap().len();
            if got >= 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(got, 10, "subscriber {i} of {n}");
    }
    a.shutdown().await;
    b.shutdown().await;
    (calls, xread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_one_or_a_thousand_subscribers_costs_one_xadd() {
    let (one, xread_one) = commands_for_publishes_to(1).await;
    let (thousand, xread_thousand) = commands_for_publishes_to(1000).await;
    assert_eq!(one, BTreeMap::from([("xadd".to_owned(), 10)]), "1 subscriber");
    assert_eq!(thousand, one, "1000 subscribers cost what 1 does");
    // Readers: at most one XREAD per publish per node (fewer when batched).
    for xread in [xread_one, xread_thousand] {
        assert!(xread <= 2 * 10 + 2, "{xread} XREADs");
    }
}
