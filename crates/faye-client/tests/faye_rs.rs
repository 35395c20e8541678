//! faye-client against faye-rs (in this process), over each transport.

mod common;

use common::RustServer;
use common::scenarios::*;
use faye_client::TransportKind::{LongPolling, WebSocket};

each_transport! {
    RustServer::start().await;
    subscribe_publish_and_wildcards => pubsub_and_wildcards,
    several_subscriptions_share_one_meta_subscribe => one_meta_subscribe_per_channel,
    extensions_and_headers_reach_the_server => extensions_and_headers,
    a_burst_of_publishes_arrives_in_order => burst_in_order,
    through_an_http_connect_proxy => through_proxy,
    a_cancelled_subscribe_then_a_new_one_is_subscribed => cancel_and_subscribe_again,
}

#[tokio::test]
async fn a_server_restart_is_recovered_over_websocket() {
    restart_recovers(&mut RustServer::start().await, WebSocket).await;
}

#[tokio::test]
async fn a_server_restart_is_recovered_over_long_polling() {
    restart_recovers(&mut RustServer::start().await, LongPolling).await;
}

#[tokio::test]
async fn a_websocket_that_breaks_falls_back_to_long_polling() {
    broken_websocket_falls_back(&RustServer::start().await).await;
}

#[tokio::test]
async fn websocket_deflate_is_negotiated_and_used() {
    websocket_deflate(&RustServer::start_deflate().await).await;
}

/// With faye-rs's own ordering off (messages applied as they arrive), order
/// rests on the client alone; over long-polling it never has two requests of
/// messages in flight (a forwarder counts them), besides the held connect.
#[tokio::test]
async fn a_burst_over_long_polling_is_one_request_at_a_time() {
    use std::time::Duration;

    use common::{Forwarder, next, only};
    use futures_util::future::join_all;

    let options = faye_server::ServerOptions::default()
        .timeout(Duration::from_secs(10))
        .order_wait(Duration::ZERO);
    let server = RustServer::start_with_options(options, None).await;
    let forwarder = Forwarder::start(server.addr).await;
    let url = server.url().replace(&server.addr.to_string(), &forwarder.addr.to_string());
    let sub = only(&server.url(), LongPolling).build().unwrap();
    let publisher = only(&url, LongPolling).build().unwrap();
    let mut s = sub.subscribe("/burst").await.unwrap();
    publisher.connect().await.unwrap();
    let results = join_all((0..1000).map(|n| publisher.publish("/burst", &n))).await;
    assert!(results.iter().all(Result::is_ok));
    for n in 0..1000 {
        assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), n);
    }
    let most = forwarder.most_http_in_flight();
    assert!((1..=2).contains(&most), "{most} requests in flight at once");
}
