//! The in-process transport: `Client::in_process` beside the server's own
//! `LocalClient`, the same code working with both; talking with network clients;
//! a lost session replaced and resubscribed.

mod common;

use faye_client::{Client, ConnectionState, TransportKind};
use faye_engine::{ClientId, Engine as _, MemoryEngine};
use faye_server::Server;
use serde_json::{Value, json};

/// The same code, run with either client: subscriptions, wildcards, deliveries.
macro_rules! same_code {
    ($client:expr) => {{
        let client = $client;
        let mut news = client.subscribe("/news/*").await.unwrap();
        let mut all = client.subscribe("/news/**").await.unwrap();
        client.publish("/news/today", &json!({"headline": "hi"})).await.unwrap();
        client.publish("/news/today/late", &2).await.unwrap();
        let m: faye_protocol::ReceivedMessage = news.recv().await.unwrap();
        assert_eq!(m.channel, "/news/today");
        assert_eq!(m.data_as::<Value>().unwrap(), json!({"headline": "hi"}));
        assert_eq!(all.recv().await.unwrap().channel, "/news/today");
        assert_eq!(all.recv().await.unwrap().data_as::<i32>().unwrap(), 2);
        assert!(!news.fell_behind());
        client
    }};
}

#[tokio::test]
async fn the_same_code_runs_on_both_in_process_clients() {
    let server = Server::new(MemoryEngine::new(), Default::default());
    let local = same_code!(server.client().await.unwrap());
    let client = same_code!(Client::in_process(&server).unwrap());
    assert_eq!(client.state(), ConnectionState::Connected { transport: TransportKind::InProcess });
    drop(local);
}

#[tokio::test]
async fn in_process_and_network_clients_meet() {
    let server = common::RustServer::start().await;
    let back_end = Client::in_process(&server.server).unwrap();
    let mut orders = back_end.subscribe("/service/orders").await.unwrap();
    let browser = common::builder(&server.url()).build().unwrap();
    let mut replies = browser.subscribe("/replies").await.unwrap();
    browser.publish("/service/orders", &"one pizza").await.unwrap();
    assert_eq!(common::next(&mut orders).await.data_as::<String>().unwrap(), "one pizza");
    back_end.publish("/replies", &"on its way").await.unwrap();
    assert_eq!(common::next(&mut replies).await.data_as::<String>().unwrap(), "on its way");
    // Trusted, as the server's own in-process client: it may subscribe to /meta.
    back_end.subscribe("/meta/**").await.unwrap();
}

#[tokio::test]
async fn a_lost_session_is_replaced_and_resubscribed() {
    let server = Server::new(MemoryEngine::new(), Default::default());
    let client = Client::in_process(&server).unwrap();
    let mut news = client.subscribe("/news").await.unwrap();
    let old = client.client_id().unwrap();
    server.engine().destroy_client(&ClientId::parse(&old).unwrap()).await.unwrap();
    let publisher = server.client().await.unwrap();
    common::within("the resubscription", async {
        loop {
            publisher.publish("/news", &"again").await.unwrap();
            tokio::select! {
                m = news.recv() => break m.unwrap(),
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    assert_ne!(client.client_id().unwrap(), old);
}
