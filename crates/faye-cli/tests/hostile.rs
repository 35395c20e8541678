//! Hostile neighbours: while 200 well-behaved subscribers (150 over WebSocket, 50
//! long-polling) receive a steady stream, one attack after another runs against
//! the same `faye serve`. Afterwards every well-behaved client has every message
//! of the stream, once and in order, still on the session it started with, and
//! the server's memory is reported against its baseline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faye_testkit::http::{HttpConn, Request, fetch};
use faye_testkit::server::FayeProcess;
use faye_testkit::ws::{RawWs, Ws, WsEvent, frame};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const TIMEOUT_SECS: u64 = 3;
const WEBSOCKETS: usize = 150;
const POLLERS: usize = 50;
/// Pollers also subscribed to the flooded channel.
const FLOODED: usize = 10;
const FLOOD_POSTS: usize = 30;
const FLOOD_PER_POST: usize = 1000;

/// What one well-behaved subscriber saw: the stream's sequence numbers in order,
/// how many flood messages, and every error it was sent.
#[derive(Debug, Default)]
struct Seen {
    steady: Vec<u64>,
    flood: usize,
    errors: Vec<Value>,
}

type Log = Arc<Mutex<Seen>>;

fn record(log: &Log, messages: &[Value]) {
    let mut seen = log.lock().unwrap();
    for m in messages {
        match m["channel"].as_str() {
            Some("/steady") => seen.steady.push(m["data"]["n"].as_u64().unwrap()),
            Some("/flood") => seen.flood += 1,
            _ => {}
        }
        if m["successful"] == false {
            seen.errors.push(m.clone());
        }
    }
}

async fn post(conn: &mut HttpConn, body: &Value) -> Vec<Value> {
    let reply = conn.call(&Request::post("/bayeux").json(body)).await.expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.body_str());
    reply.json().as_array().cloned().unwrap_or_default()
}

fn handshake(types: &str) -> Value {
    json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": [types]}])
}

/// A long-polling subscriber: handshake, subscribe, then connect after connect
/// until `stop`, recording what comes back.
async fn poller(
    addr: SocketAddr,
    channels: Vec<&'static str>,
    log: Log,
    stop: Arc<tokio::sync::Notify>,
) -> String {
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let id = post(&mut conn, &handshake("long-polling")).await[0]["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": channels}]);
    assert_eq!(post(&mut conn, &sub).await[0]["successful"], true);
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]);
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            replies = post(&mut conn, &connect) => record(&log, &replies),
            () = &mut stopped => return id,
        }
    }
}

/// A WebSocket subscriber: handshake, subscribe, connect; then a new connect after
/// each connect reply, as Faye's client does, recording every frame.
async fn websocket(url: String, log: Log, stop: Arc<tokio::sync::Notify>) -> String {
    let mut ws = Ws::connect(&url).await;
    let id = ws.call(&handshake("websocket")).await[0]["clientId"].as_str().unwrap().to_owned();
    let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/steady"}]);
    assert_eq!(ws.call(&sub).await[0]["successful"], true);
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}]);
    ws.send_json(&connect).await;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            event = ws.next_event(Duration::from_secs(60)) => match event {
                Some(WsEvent::Json(Value::Array(messages))) => {
                    if messages.iter().any(|m| m["channel"] == "/meta/connect") {
                        ws.send_json(&connect).await;
                    }
                    record(&log, &messages);
                }
                other => panic!("a well-behaved WebSocket got {other:?}"),
            },
            () = &mut stopped => return id,
        }
    }
}

/// Sends `value` as one text frame.
async fn send_text(ws: &mut RawWs, value: Value) {
    let text = frame(true, false, OpCode::Data(Data::Text), value.to_string().into_bytes());
    ws.send(text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_clients_lose_nothing_to_hostile_ones() {
    let server = FayeProcess::serve(
        env!("CARGO_BIN_EXE_faye"),
        &[
            "--timeout",
            &TIMEOUT_SECS.to_string(),
            "--write-timeout",
            "2",
            "--allowed-origins",
            "http://good.example",
        ],
    )
    .await;
    let addr = server.addr();
    let url = format!("ws://{addr}/bayeux");
    let stop = Arc::new(tokio::sync::Notify::new());

    // The well-behaved: 150 WebSockets, 50 pollers (10 of them also on /flood).
    let mut clients: Vec<(Log, JoinHandle<String>, bool)> = Vec::new();
    for i in 0..WEBSOCKETS + POLLERS {
        let log = Log::default();
        let task = if i < WEBSOCKETS {
            tokio::spawn(websocket(url.clone(), log.clone(), stop.clone()))
        } else {
            let flooded = i - WEBSOCKETS < FLOODED;
            let channels = if flooded { vec!["/steady", "/flood"] } else { vec!["/steady"] };
            tokio::spawn(poller(addr, channels, log.clone(), stop.clone()))
        };
        clients.push((log, task, i >= WEBSOCKETS && i - WEBSOCKETS < FLOODED));
    }
    // Everyone subscribed before the stream starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = server.rss_kib();

    // The steady stream: 10 publishes a second from one publisher.
    let publishing = tokio::spawn(async move {
        let mut conn = HttpConn::connect(addr).await.unwrap();
        let id = post(&mut conn, &handshake("long-polling")).await[0]["clientId"].clone();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let publish = json!([{"channel": "/steady", "clientId": id, "data": {"n": n}}]);
            assert_eq!(post(&mut conn, &publish).await[0]["successful"], true);
            n += 1;
            if n == 150 {
                return n;
            }
        }
    });

    let mut report = Vec::new();

    // 1. A request whose message has 70,000 unknown keys (quadratic to decode once).
    let mut keys = serde_json::Map::new();
    for k in 0..70_000 {
        keys.insert(format!("k{k}"), json!(0));
    }
    keys.insert("channel".into(), json!("/elsewhere"));
    keys.insert("data".into(), json!(1));
    let started = std::time::Instant::now();
    let reply = fetch(addr, &Request::post("/bayeux").json(&Value::Object(keys))).await.unwrap();
    report.push(format!("70,000 unknown keys: {} in {:?}", reply.status, started.elapsed()));

    // 2. One WebSocket sending 10,000 connects for its client: one is held.
    let mut spam = Ws::connect(&url).await;
    let id = spam.call(&handshake("websocket")).await[0]["clientId"].clone();
    let connects: Vec<Value> = (0..50)
        .map(|_| json!({"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}))
        .collect();
    for _ in 0..200 {
        spam.send_json(&json!(connects)).await;
    }
    let rss = server.rss_kib();
    report.push(format!("after 10,000 connects on one WebSocket: {rss:?} KiB"));

    // 3. 1,000 handshakes in one request: one client is created.
    let many = json!((0..1000).map(|_| handshake("long-polling")[0].clone()).collect::<Vec<_>>());
    let reply = fetch(addr, &Request::post("/bayeux").json(&many)).await.unwrap();
    let created =
        reply.json().as_array().unwrap().iter().filter(|m| m["successful"] == true).count();
    assert_eq!(created, 1, "one handshake per request creates a client");

    // 4. An anonymous flood: 30 requests of 1,000 publishes at once on /flood.
    let floods: Vec<_> = (0..FLOOD_POSTS)
        .map(|p| {
            let batch: Vec<Value> = (0..FLOOD_PER_POST)
                .map(|i| json!({"channel": "/flood", "data": {"p": p, "i": i}}))
                .collect();
            tokio::spawn(
                async move { fetch(addr, &Request::post("/bayeux").json(&json!(batch))).await },
            )
        })
        .collect();
    for flood in floods {
        assert_eq!(flood.await.unwrap().unwrap().status, 200);
    }

    // 5. A subscriber that stops reading while big messages come: dropped by the
    //    write timeout, however much is queued for it.
    let (head, mut stalled) = RawWs::connect(addr, "/bayeux", &[]).await.unwrap();
    assert_eq!(head.status, 101);
    send_text(&mut stalled, handshake("websocket")).await;
    let reply: Value =
        serde_json::from_slice(stalled.read_frame().await.unwrap().payload()).unwrap();
    let stalled_id = reply[0]["clientId"].clone();
    send_text(
        &mut stalled,
        json!([{"channel": "/meta/subscribe", "clientId": stalled_id, "subscription": "/big"}]),
    )
    .await;
    let _ = stalled.read_frame().await.unwrap();
    send_text(&mut stalled, json!([{"channel": "/meta/connect", "clientId": stalled_id, "connectionType": "websocket"}])).await;
    let mut big = HttpConn::connect(addr).await.unwrap();
    for _ in 0..24 {
        let publish = json!([{"channel": "/big", "data": "x".repeat(512 * 1024)}]);
        post(&mut big, &publish).await;
    }

    // 6. 50 WebSockets that never bind a client, and a cross-site upgrade.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(RawWs::connect(addr, "/bayeux", &[]).await.unwrap().1);
    }
    let (refused, _) =
        RawWs::connect(addr, "/bayeux", &[("Origin", "https://evil.example")]).await.unwrap();
    assert_eq!(refused.status, 403);

    // The attacks are over; the stream runs to its end.
    let published =
        tokio::time::timeout(Duration::from_secs(60), publishing).await.unwrap().unwrap();
    // The stalled subscriber was dropped: its connection ends (after what the
    // kernel had buffered), it does not hang.
    let ended = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end()).await;
    assert!(ended.is_ok(), "a subscriber that stopped reading still holds its connection");
    // Sockets that never bound a client are closed after the timeout.
    for mut socket in idle {
        let ended =
            tokio::time::timeout(Duration::from_secs(3 * TIMEOUT_SECS), socket.read_to_end()).await;
        assert!(ended.is_ok(), "an unbound WebSocket is still open");
    }

    // Let the last deliveries arrive, then stop the well-behaved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = |clients: &[(Log, JoinHandle<String>, bool)]| {
        clients.iter().all(|(log, _, flooded)| {
            let seen = log.lock().unwrap();
            seen.steady.len() as u64 >= published
                && (!flooded || seen.flood >= FLOOD_POSTS * FLOOD_PER_POST)
        })
    };
    while !done(&clients) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.notify_waiters();
    let mut ids = HashMap::new();
    for (i, (log, task, flooded)) in clients.iter_mut().enumerate() {
        let id = task.await.unwrap();
        assert!(ids.insert(id, i).is_none());
        let seen = log.lock().unwrap();
        assert_eq!(seen.errors, Vec::<Value>::new(), "client {i} was sent errors");
        assert_eq!(seen.steady, (0..published).collect::<Vec<_>>(), "client {i}: the stream");
        if *flooded {
            assert_eq!(seen.flood, FLOOD_POSTS * FLOOD_PER_POST, "poller {i}: the flood");
        }
    }
    // Every well-behaved session is still there: one more connect each succeeds.
    let mut conn = HttpConn::connect(addr).await.unwrap();
    for id in ids.keys() {
        let connect = json!([{"channel": "/meta/connect", "clientId": id,
                              "connectionType": "long-polling", "advice": {"timeout": 0}}]);
        assert_eq!(post(&mut conn, &connect).await[0]["successful"], true, "{id}");
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    report.push(format!("server RSS: {baseline:?} KiB before the attacks, {after:?} KiB after"));
    eprintln!("hostile neighbours:\n  {}", report.join("\n  "));
    if let (Some(before), Some(after)) = (baseline, after) {
        // Not a speed target: a gross leak (hundreds of MB) is what this catches.
        assert!(after < before + 256 * 1024, "RSS grew from {before} to {after} KiB");
    }
}
