//! The server's advice, followed: `interval` between connects, `reconnect:
//! none` stops the client; and operations always settle.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::scenarios::wait_state;
use common::{RustServer, builder, next, only};
use faye_client::TransportKind::{LongPolling, WebSocket};
use faye_client::{ConnectionState, Error, Reason, TransportKind};
use faye_protocol::Message;
use faye_server::{BoxFuture, Extension, RequestInfo, ServerOptions};
use serde_json::json;

/// Notes when each connect reply leaves and each connect arrives; advises
/// `reconnect: none` once told to.
#[derive(Default)]
struct Connects {
    events: Mutex<Vec<(&'static str, Instant)>>,
    none: Mutex<bool>,
}

impl Extension for Connects {
    fn incoming<'a>(
        &'a self,
        m: Message,
        _: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        if m.channel.as_deref() == Some("/meta/connect") {
            self.events.lock().unwrap().push(("in", Instant::now()));
        }
        Box::pin(async move { Some(m) })
    }

    fn outgoing<'a>(
        &'a self,
        mut m: Message,
        _: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        if m.channel.as_deref() == Some("/meta/connect") {
            self.events.lock().unwrap().push(("out", Instant::now()));
            if *self.none.lock().unwrap() {
                m.advice = Some(json!({"reconnect": "none"}));
            }
        }
        Box::pin(async move { Some(m) })
    }
}

async fn interval_is_followed(kind: TransportKind) {
    // Sessions expire after twice the timeout: longer than the interval.
    let options = ServerOptions::default()
        .timeout(Duration::from_millis(500))
        .interval(Duration::from_millis(300));
    let server = RustServer::start_with_options(options, None).await;
    let connects = Arc::new(Connects::default());
    server.server.add_extension(connects.clone());
    let client = only(&server.url(), kind).build().unwrap();
    client.connect().await.unwrap();
    let id = client.client_id();
    common::within("four connects", async {
        while connects.events.lock().unwrap().iter().filter(|e| e.0 == "in").count() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let events = connects.events.lock().unwrap().clone();
    // Each connect after the first comes at least `interval` after the last reply.
    let gaps: Vec<Duration> = events
        .windows(2)
        .filter(|w| w[0].0 == "out" && w[1].0 == "in")
        .map(|w| w[1].1 - w[0].1)
        .collect();
    assert!(gaps.len() >= 2, "{events:?}");
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(290)), "{gaps:?}");
    assert_eq!(client.state(), ConnectionState::Connected { transport: kind }, "connected");
    assert_eq!(client.client_id(), id, "one session all along");
}

#[tokio::test]
async fn the_advised_interval_separates_connects_over_websocket() {
    interval_is_followed(WebSocket).await;
}

#[tokio::test]
async fn the_advised_interval_separates_connects_over_long_polling() {
    interval_is_followed(LongPolling).await;
}

#[tokio::test]
async fn reconnect_none_stops_the_client() {
    let options = ServerOptions::default().timeout(Duration::from_millis(200));
    let server = RustServer::start_with_options(options, None).await;
    let connects = Arc::new(Connects::default());
    server.server.add_extension(connects.clone());
    let client = builder(&server.url()).build().unwrap();
    let mut sub = client.subscribe("/x").await.unwrap();
    *connects.none.lock().unwrap() = true;
    wait_state(&client, "the stop", |s| *s == ConnectionState::Disconnected(Reason::AdviceNone))
        .await;
    assert!(sub.recv().await.is_none(), "its subscriptions end");
    assert_eq!(client.client_id(), None);
    let connects_then = connects.events.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connects.events.lock().unwrap().len(), connects_then, "no more connects");
}

#[tokio::test]
async fn a_publish_to_an_unreachable_server_settles_at_disconnect() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bayeux", listener.local_addr().unwrap());
    drop(listener);
    let client = builder(&url).build().unwrap();
    let publish = client.publish("/x", &1);
    wait_state(&client, "a failed attempt", |s| matches!(s, ConnectionState::Reconnecting(_)))
        .await;
    client.disconnect().await.unwrap();
    let result = common::within("the publish to settle", publish).await;
    assert!(matches!(result, Err(Error::Disconnected(Reason::Requested))), "{result:?}");
    assert_eq!(client.state(), ConnectionState::Disconnected(Reason::Requested));
}

#[tokio::test]
async fn a_disconnected_client_starts_again_when_used() {
    let server = RustServer::start().await;
    let client = builder(&server.url()).build().unwrap();
    assert_eq!(client.state(), ConnectionState::Disconnected(Reason::NotStarted));
    let mut sub = client.subscribe("/again").await.unwrap();
    let first = client.client_id().unwrap();
    client.disconnect().await.unwrap();
    assert!(sub.recv().await.is_none());
    let mut sub = client.subscribe("/again").await.unwrap();
    assert_ne!(client.client_id().unwrap(), first);
    client.publish("/again", &"back").await.unwrap();
    assert_eq!(next(&mut sub).await.data_as::<String>().unwrap(), "back");
}

/// Forgets every client at its first connect, as a broken server might.
struct Amnesia(Mutex<usize>);

impl Extension for Amnesia {
    fn outgoing<'a>(
        &'a self,
        mut m: Message,
        _: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        match m.channel.as_deref() {
            Some("/meta/handshake") => *self.0.lock().unwrap() += 1,
            Some("/meta/connect") => {
                m.successful = Some(false);
                m.error = Some("401::Unknown client".into());
                m.advice = Some(json!({"reconnect": "handshake"}));
            }
            _ => {}
        }
        Box::pin(async move { Some(m) })
    }
}

#[tokio::test]
async fn a_server_that_forgets_at_once_is_not_hammered() {
    // Connects are held 100 ms, then refused.
    let options = ServerOptions::default().timeout(Duration::from_millis(100));
    let server = RustServer::start_with_options(options, None).await;
    let amnesia = Arc::new(Amnesia(Mutex::new(0)));
    server.server.add_extension(amnesia.clone());
    // Each cycle takes 100 ms, then a pause of 50 ms doubling to 500 ms (less
    // jitter): under ten handshakes in two seconds, where a client without
    // backoff makes twenty.
    let client = builder(&server.url()).build().unwrap();
    client.connect().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handshakes = *amnesia.0.lock().unwrap();
    assert!((2..15).contains(&handshakes), "{handshakes} handshakes");
    // Still trying: between a handshake and the refusal of its connect, or
    // waiting after one.
    assert!(
        matches!(
            client.state(),
            ConnectionState::Connected { .. } | ConnectionState::Reconnecting(Reason::SessionLost)
        ),
        "{:?}",
        client.state()
    );
}

#[tokio::test]
async fn publishes_waiting_for_a_server_are_bounded() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bayeux", listener.local_addr().unwrap());
    drop(listener);
    let client = builder(&url).build().unwrap();
    let mut waiting: Vec<_> = (0..100_000).map(|n| client.publish("/x", &n)).collect();
    let refused = client.publish("/x", &"one too many").await;
    assert!(matches!(refused, Err(Error::Backlog(100_000))), "{refused:?}");
    // Given-up publishes make room.
    waiting.truncate(99_990);
    let more = client.publish("/x", &"room again");
    assert!(tokio::time::timeout(Duration::from_millis(200), more).await.is_err(), "it waits");
    client.disconnect().await.unwrap();
    assert!(matches!(waiting.pop().unwrap().await, Err(Error::Disconnected(_))));
}
