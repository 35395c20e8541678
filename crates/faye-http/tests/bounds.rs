//! Bounds on what one client or socket can make the server hold (issue 16), over
//! real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_protocol::Message;
use faye_server::{BoxFuture, Extension, RequestInfo, Server, ServerOptions};
use faye_testkit::http::{HttpConn, Request, fetch};
use faye_testkit::ws::{Ws, WsEvent};
use faye_testkit::{QUICK, within};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A server whose timeout is `timeout`; returns its address and service.
async fn start(timeout: Duration) -> (SocketAddr, FayeService<MemoryEngine>) {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().timeout(timeout));
    let faye = FayeService::new(server, FayeOptions::default());
    (faye_testkit::server::serve(faye.clone()).await, faye)
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/bayeux")
}

async fn ws_handshake(ws: &mut Ws) -> String {
    let reply = ws
        .call(&json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]))
        .await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

fn connect(id: &str) -> Value {
    json!([{"channel":"/meta/connect","clientId":id,"connectionType":"websocket"}])
}

#[tokio::test]
async fn a_websocket_sending_many_connects_has_all_but_the_newest_answered_at_once() {
    // A timeout far beyond the test's waits: any reply seen was not held.
    let (addr, _faye) = start(Duration::from_secs(600)).await;
    let mut ws = Ws::connect(&ws_url(addr)).await;
    let id = ws_handshake(&mut ws).await;
    for _ in 0..50 {
        ws.send_json(&connect(&id)).await;
    }
    for i in 0..49 {
        let reply = ws.recv_json(QUICK).await;
        assert_eq!(reply[0]["channel"], "/meta/connect", "reply {i}: {reply}");
        assert_eq!(reply[0]["successful"], true, "reply {i}: {reply}");
    }
    // The newest is held, as a well-behaved client's only connect would be.
    assert!(ws.next_event(Duration::from_millis(300)).await.is_none());
}

/// Holds every publish to `/stall` until a permit is added, counting arrivals.
struct Stall {
    seen: AtomicUsize,
    gate: Semaphore,
}

impl Extension for Stall {
    fn incoming<'a>(
        &'a self,
        message: Message,
        _: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        Box::pin(async move {
            if message.channel.as_deref() == Some("/stall") {
                self.seen.fetch_add(1, Ordering::SeqCst);
                self.gate.acquire().await.expect("gate open").forget();
            }
            Some(message)
        })
    }
}

/// Sends `frames` copies of `frame`, expects exactly `cap` of them to be taken up
/// while none is answered, then releases them all: every one is answered.
async fn pending_frames_are_capped(frame: Value, frames: usize, cap: usize) {
    let (addr, faye) = start(Duration::from_secs(600)).await;
    let stall = Arc::new(Stall { seen: AtomicUsize::new(0), gate: Semaphore::new(0) });
    faye.server().add_extension(stall.clone());
    let mut ws = Ws::connect(&ws_url(addr)).await;
    for _ in 0..frames {
        ws.send_json(&frame).await;
    }
    within(QUICK, "the capped number of frames to be taken up", async {
        while stall.seen.load(Ordering::SeqCst) < cap {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stall.seen.load(Ordering::SeqCst), cap, "frames past the cap were read");

    // Once replies drain, the rest is read and answered: nothing is lost.
    stall.gate.add_permits(frames);
    for _ in 0..frames {
        let reply = ws.recv_json(QUICK).await;
        assert_eq!(reply[0]["successful"], true, "{reply}");
    }
    assert_eq!(stall.seen.load(Ordering::SeqCst), frames);
}

/// The documented cap (security.md): 1,024 frames awaiting their replies (a
/// burst of publishes from Faye's client is one frame per message).
#[tokio::test]
async fn a_websocket_stops_being_read_while_too_many_replies_are_pending() {
    pending_frames_are_capped(json!([{"channel":"/stall","data":1}]), 1100, 1024).await;
}

/// ... or 1 MiB of frames awaiting their replies.
#[tokio::test]
async fn a_websocket_stops_being_read_while_too_many_bytes_are_pending() {
    let frame = json!([{"channel":"/stall","data":"x".repeat(100_000)}]);
    let len = frame.to_string().len();
    // Read while less than 1 MiB is pending: the frame that reaches it is the last.
    let cap = (1usize << 20).div_ceil(len);
    pending_frames_are_capped(frame, 30, cap).await;
}

async fn expect_policy_close(ws: &mut Ws) {
    match ws.next_event(QUICK).await {
        Some(WsEvent::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason.as_str(), "no client bound within the timeout");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_that_never_binds_a_client_is_closed_after_the_timeout() {
    let (addr, _faye) = start(Duration::from_secs(1)).await;
    let mut silent = Ws::connect(&ws_url(addr)).await;
    // A handshake alone binds nothing: only a connect does.
    let mut handshaken = Ws::connect(&ws_url(addr)).await;
    ws_handshake(&mut handshaken).await;
    expect_policy_close(&mut silent).await;
    expect_policy_close(&mut handshaken).await;
}

#[tokio::test]
async fn a_connected_websocket_stays_open_past_the_timeout() {
    let (addr, _faye) = start(Duration::from_secs(1)).await;
    let mut ws = Ws::connect(&ws_url(addr)).await;
    let id = ws_handshake(&mut ws).await;
    // A well-behaved client: each held connect is answered after the timeout and
    // the next one sent.
    for _ in 0..3 {
        let reply = ws.call(&connect(&id)).await;
        assert_eq!(reply[0]["successful"], true, "{reply}");
    }
}

async fn event_stream(addr: SocketAddr, id: &str) -> HttpConn {
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let request = Request::get(&format!("/bayeux/{id}"))
        .header("Accept", "text/event-stream")
        .header("Connection", "close");
    conn.send(&request).await.unwrap();
    let head = within(QUICK, "the stream's head", conn.read_head()).await.unwrap();
    assert_eq!(head.status, 200, "{head:?}");
    let first = within(QUICK, "the first chunk", conn.read_chunk()).await.unwrap();
    assert_eq!(first.as_deref(), Some(&b"retry: 5000\r\n\r\n"[..]));
    conn
}

#[tokio::test]
async fn an_event_stream_whose_client_moved_away_ends_after_the_timeout() {
    let (addr, _faye) = start(Duration::from_secs(1)).await;
    let handshake = fetch(
        addr,
        &Request::post("/bayeux").header("Content-Type", "application/json").json(
            &json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["eventsource"]}]),
        ),
    )
    .await
    .unwrap();
    let id = handshake.json()[0]["clientId"].as_str().unwrap().to_owned();
    let mut orphan = event_stream(addr, &id).await;
    // The browser reopened its stream: the new one takes the client's deliveries.
    let _current = event_stream(addr, &id).await;
    let ended = within(QUICK, "the orphaned stream to end", async {
        loop {
            match orphan.read_chunk().await {
                Ok(Some(_keepalive)) => {}
                Ok(None) => break true,
                Err(_) => break false,
            }
        }
    })
    .await;
    assert!(ended, "the stream ends with its last chunk");
}
