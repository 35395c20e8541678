//! faye-client against Node Faye 1.4.3 (npm `faye`, from interop/node_modules),
//! over each transport. Needs `node` and `npm ci` in interop/.

mod common;

use common::NodeServer;
use common::scenarios::*;
use faye_client::TransportKind::{LongPolling, WebSocket};

each_transport! {
    NodeServer::start(false).await;
    subscribe_publish_and_wildcards => pubsub_and_wildcards,
    several_subscriptions_share_one_meta_subscribe => one_meta_subscribe_per_channel,
    extensions_and_headers_reach_the_server => extensions_and_headers,
    a_burst_of_publishes_arrives_in_order => burst_in_order,
    through_an_http_connect_proxy => through_proxy,
    a_cancelled_subscribe_then_a_new_one_is_subscribed => cancel_and_subscribe_again,
}

#[tokio::test]
async fn a_server_restart_is_recovered_over_websocket() {
    restart_recovers(&mut NodeServer::start(false).await, WebSocket).await;
}

#[tokio::test]
async fn a_server_restart_is_recovered_over_long_polling() {
    restart_recovers(&mut NodeServer::start(false).await, LongPolling).await;
}

#[tokio::test]
async fn a_websocket_that_breaks_falls_back_to_long_polling() {
    broken_websocket_falls_back(&NodeServer::start(false).await).await;
}

#[tokio::test]
async fn websocket_deflate_is_negotiated_with_permessage_deflate() {
    websocket_deflate(&NodeServer::start(true).await).await;
}
