//! Operations of `faye serve`: health checks, `/metrics` after a known
//! workload, and a graceful drain on SIGTERM.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use faye_testkit::http::{HttpConn, Request, Response, fetch};
use faye_testkit::server::serve_command;
use faye_testkit::{QUICK, within};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

/// A `faye serve` child with a metrics listener.
struct Node {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

fn addr_in(line: &str) -> SocketAddr {
    let rest = line.split("://").nth(1).unwrap_or_else(|| panic!("no URL in {line:?}"));
    rest.split('/').next().unwrap().parse().unwrap()
}

impl Node {
    async fn start(args: &[&str]) -> Self {
        let mut child = serve_command(env!("CARGO_BIN_EXE_faye"), args)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .spawn()
            .expect("spawn faye");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (first, second) = within(Duration::from_secs(20), "faye's address lines", async {
            (lines.next_line().await.unwrap().unwrap(), lines.next_line().await.unwrap().unwrap())
        })
        .await;
        assert!(second.starts_with("faye-rs metrics on http://"), "{second}");
        // Keep reading stdout so that the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr: addr_in(&first), metrics: addr_in(&second) }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(status.expect("run kill").success());
    }

    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        within(limit, "faye to exit", self.child.wait()).await.unwrap()
    }

    /// The scraped metrics, `name{labels}` → value.
    async fn scrape(&self) -> Vec<(String, f64)> {
        let res = within(QUICK, "/metrics", fetch(self.metrics, &Request::get("/metrics")))
            .await
            .unwrap();
        assert_eq!(res.status, 200);
        assert!(res.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        res.text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        self.scrape().await.into_iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| v)
    }
}

/// Connects held now, of long-polling and of WebSocket clients.
const HELD_LP: &str = "faye_connects_held{transport=\"long-polling\"}";
const HELD_WS: &str = "faye_connects_held{transport=\"websocket\"}";

async fn post(conn: &mut HttpConn, body: Value) -> Vec<Value> {
    let res = conn.call(&Request::post("/bayeux").json(&body)).await.expect("a reply");
    assert_eq!(res.status, 200, "{}", res.text());
    res.json().as_array().unwrap().clone()
}

async fn handshake(conn: &mut HttpConn) -> String {
    let reply = within(
        QUICK,
        "handshake",
        post(
            conn,
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]}]),
        ),
    )
    .await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

async fn subscribe(conn: &mut HttpConn, client: &str, channel: &str) {
    let reply = within(
        QUICK,
        "subscribe",
        post(
            conn,
            json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channel}]),
        ),
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
}

fn connect(client: &str, hold_ms: u64) -> Value {
    json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling",
            "advice": {"timeout": hold_ms}}])
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    within(QUICK, path, fetch(addr, &Request::get(path))).await.unwrap()
}

#[tokio::test]
async fn health_checks_answer_on_both_listeners() {
    let node = Node::start(&[]).await;
    for addr in [node.addr, node.metrics] {
        let res = get(addr, "/healthz").await;
        assert_eq!((res.status, res.text().as_str()), (200, "ok\n"));
        let res = get(addr, "/readyz").await;
        assert_eq!((res.status, res.text().as_str()), (200, "ready\n"));
    }
    // The Bayeux endpoint is where it was, and other paths are still Faye's 404.
    let mut conn = HttpConn::connect(node.addr).await.unwrap();
    assert!(!handshake(&mut conn).await.is_empty());
    assert_eq!(get(node.addr, "/metrics").await.status, 404);
    assert_eq!(get(node.metrics, "/bayeux").await.status, 404);
}

#[tokio::test]
async fn metrics_count_what_a_workload_did() {
    const N: usize = 7;
    let node = Node::start(&[]).await;
    let mut sub = HttpConn::connect(node.addr).await.unwrap();
    let mut publ = HttpConn::connect(node.addr).await.unwrap();
    let a = handshake(&mut sub).await;
    let b = handshake(&mut publ).await;
    subscribe(&mut sub, &a, "/news").await;
    subscribe(&mut sub, &a, "/sport/*").await;
    for i in 0..N {
        let reply = within(
            QUICK,
            "publish",
            post(&mut publ, json!([{"channel": "/news", "clientId": b, "data": {"i": i}}])),
        )
        .await;
        assert_eq!(reply[0]["successful"], true);
    }
    // A publish nobody hears counts as published, not delivered.
    post(&mut publ, json!([{"channel": "/weather", "clientId": b, "data": 1}])).await;
    // Errors: an unknown client (401), a missing subscription (402), twice.
    let bad = post(&mut publ, connect("nobody", 0)).await;
    assert_eq!(bad[0]["error"], "401:nobody:Unknown client");
    for _ in 0..2 {
        let bad = post(&mut publ, json!([{"channel": "/meta/subscribe", "clientId": b}])).await;
        assert!(bad[0]["error"].as_str().unwrap().starts_with("402:"), "{bad:?}");
    }
    // Sampled from the engine at the scrape: two channels with a subscriber, and
    // the N messages queued for it.
    assert_eq!(node.metric("faye_channels").await, 2.0);
    assert_eq!(node.metric("faye_queued_messages").await, N as f64);
    // The subscriber's connect takes its N messages.
    let got = within(QUICK, "the deliveries", post(&mut sub, connect(&a, 0))).await;
    assert_eq!(got.iter().filter(|m| m["channel"] == "/news").count(), N);

    let scraped = node.scrape().await;
    let value = |name: &str| scraped.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(value("faye_handshakes_total"), Some(2.0));
    assert_eq!(value("faye_sessions"), Some(2.0));
    assert_eq!(value("faye_subscriptions"), Some(2.0));
    assert_eq!(value("faye_messages_published_total"), Some(N as f64 + 1.0));
    assert_eq!(value("faye_messages_delivered_total"), Some(N as f64));
    assert_eq!(value("faye_errors_total{code=\"401\"}"), Some(1.0));
    assert_eq!(value("faye_errors_total{code=\"402\"}"), Some(2.0));
    assert_eq!(value(HELD_LP).unwrap_or(0.0), 0.0);
    assert_eq!(value("faye_queued_messages"), Some(0.0));
    assert_eq!(value("faye_slow_consumers_dropped_total"), Some(0.0));
    // Every engine operation is timed.
    let engine_ops = |op: &str| {
        let name = format!("faye_engine_operation_seconds_count{{op=\"{op}\",outcome=\"ok\"}}");
        value(&name)
    };
    assert_eq!(engine_ops("create_client"), Some(2.0));
    assert_eq!(engine_ops("subscribe"), Some(2.0));
    assert_eq!(engine_ops("publish"), Some(N as f64 + 1.0));
    let bucket = "faye_engine_operation_seconds_bucket{op=\"publish\",outcome=\"ok\",le=\"+Inf\"}";
    assert_eq!(value(bucket), Some(N as f64 + 1.0));

    // A held connect shows while it is held, and one more publish is delivered.
    let held = tokio::spawn({
        let addr = node.addr;
        let a = a.clone();
        async move {
            let mut conn = HttpConn::connect(addr).await.unwrap();
            post(&mut conn, connect(&a, 30_000)).await
        }
    });
    let start = Instant::now();
    while node.metric(HELD_LP).await != 1.0 {
        assert!(start.elapsed() < QUICK, "the held connect never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post(&mut publ, json!([{"channel": "/sport/tennis", "clientId": b, "data": 2}])).await;
    let got = within(QUICK, "the held connect's answer", held).await.unwrap();
    assert_eq!(got.iter().filter(|m| m["channel"] == "/sport/tennis").count(), 1);
    let scraped = node.scrape().await;
    let value = |name: &str| scraped.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(value(HELD_LP), Some(0.0));
    assert_eq!(value("faye_messages_published_total"), Some(N as f64 + 2.0));
    assert_eq!(value("faye_messages_delivered_total"), Some(N as f64 + 1.0));

    // A disconnect ends a session and its subscriptions.
    post(&mut sub, json!([{"channel": "/meta/disconnect", "clientId": a}])).await;
    let scraped = node.scrape().await;
    let value = |name: &str| scraped.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(value("faye_sessions"), Some(1.0));
    assert_eq!(value("faye_subscriptions"), Some(0.0));
}

/// SIGTERM with connects held and a slow request in flight: the held connects
/// are answered at once, with the messages published before and advice to
/// reconnect; /readyz says 503 while the drain lasts; the process exits within
/// --drain-timeout.
#[tokio::test]
async fn sigterm_drains_within_the_bound() {
    const CLIENTS: usize = 20;
    const PUBLISHES: usize = 10;
    let drain = Duration::from_secs(3);
    let mut node = Node::start(&["--drain-timeout", "3"]).await;

    // Subscribers, each with a connect held (after taking what was published).
    let mut publ = HttpConn::connect(node.addr).await.unwrap();
    let b = handshake(&mut publ).await;
    let mut subscribers = Vec::new();
    for _ in 0..CLIENTS {
        let mut conn = HttpConn::connect(node.addr).await.unwrap();
        let id = handshake(&mut conn).await;
        subscribe(&mut conn, &id, "/load").await;
        subscribers.push((conn, id));
    }
    for i in 0..PUBLISHES {
        let reply = post(&mut publ, json!([{"channel": "/load", "clientId": b, "data": i}])).await;
        assert_eq!(reply[0]["successful"], true, "publish {i} not acknowledged");
    }
    let mut held = Vec::new();
    for (mut conn, id) in subscribers {
        held.push(tokio::spawn(async move {
            let mut got = 0;
            let replies = loop {
                let reply = post(&mut conn, connect(&id, 60_000)).await;
                got += reply.iter().filter(|m| m["channel"] == "/load").count();
                if got >= PUBLISHES {
                    // All in: this connect is held until the drain answers it.
                    if reply.iter().all(|m| m["channel"] != "/load") {
                        break reply;
                    }
                }
            };
            (got, replies)
        }));
    }
    let start = Instant::now();
    while node.metric(HELD_LP).await < CLIENTS as f64 {
        assert!(start.elapsed() < QUICK * 2, "the connects were never all held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request whose body never comes keeps the drain going until the bound.
    let mut slow = HttpConn::connect(node.addr).await.unwrap();
    slow.write_raw(b"POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let signalled = Instant::now();
    node.signal("TERM");
    for task in held {
        let (got, reply) = within(QUICK, "a held connect's answer", task).await.unwrap();
        assert_eq!(got, PUBLISHES, "a subscriber missed messages");
        let connect = &reply[0];
        assert_eq!(connect["channel"], "/meta/connect", "{reply:?}");
        assert_eq!(connect["successful"], true, "{reply:?}");
        assert_eq!(connect["advice"]["reconnect"], "retry", "{reply:?}");
    }
    // At once, not at the drain's bound (3 s).
    assert!(signalled.elapsed() < Duration::from_secs(2), "held connects answered late");
    // Not ready while draining (the metrics listener stays up).
    let res = get(node.metrics, "/readyz").await;
    assert_eq!(res.status, 503);
    assert_eq!(res.text(), "not ready: shutting down\n");
    assert_eq!(get(node.metrics, "/healthz").await.status, 200);
    // No new connections on the main listener.
    assert!(HttpConn::connect(node.addr).await.is_err(), "still accepting");

    let status = node.wait_exit(drain + Duration::from_secs(2)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= drain - Duration::from_millis(200),
        "did not wait for the slow request: {took:?}"
    );
    assert!(took < drain + Duration::from_millis(1500), "took {took:?}, bound {drain:?}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut node = Node::start(&["--drain-timeout", "60"]).await;
    let mut slow = HttpConn::connect(node.addr).await.unwrap();
    slow.write_raw(b"POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.signal("TERM");
    // Draining (the slow request keeps it going), then the second signal.
    let start = Instant::now();
    while get(node.metrics, "/readyz").await.status != 503 {
        assert!(start.elapsed() < QUICK, "never draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(node.child.try_wait().unwrap().is_none(), "exited before the bound");
    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(2)).await;
    assert!(!status.success(), "a forced exit should not look clean: {status:?}");
}

/// WebSocket deliveries are counted, and the socket shows by transport while open.
#[tokio::test]
async fn metrics_count_websocket_sockets_and_deliveries() {
    use faye_testkit::ws::Ws;
    let node = Node::start(&[]).await;
    let mut ws = Ws::connect(&format!("ws://{}/bayeux", node.addr)).await;
    let reply = ws
        .call(&json!([{"channel": "/meta/handshake", "version": "1.0",
                       "supportedConnectionTypes": ["websocket"]}]))
        .await;
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let reply = ws
        .call(&json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/ws"}]))
        .await;
    assert_eq!(reply[0]["successful"], true);
    ws.send_json(&json!([{"channel": "/meta/connect", "clientId": id,
                           "connectionType": "websocket"}]))
        .await;
    let mut publ = HttpConn::connect(node.addr).await.unwrap();
    let b = handshake(&mut publ).await;
    for i in 0..3 {
        post(&mut publ, json!([{"channel": "/ws", "clientId": b, "data": i}])).await;
    }
    let mut got = 0;
    while got < 3 {
        let frame = ws.recv_json(QUICK).await;
        got += frame.as_array().unwrap().iter().filter(|m| m["channel"] == "/ws").count();
    }
    let sockets = "faye_sockets{transport=\"websocket\"}";
    assert_eq!(node.metric(sockets).await, 1.0);
    assert_eq!(node.metric("faye_messages_delivered_total").await, 3.0);
    assert_eq!(node.metric("faye_messages_published_total").await, 3.0);
    assert_eq!(node.metric(HELD_WS).await, 1.0);
    ws.close().await;
    let start = Instant::now();
    while node.metric(sockets).await != 0.0 || node.metric(HELD_WS).await != 0.0 {
        assert!(start.elapsed() < QUICK, "the closed socket is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rolling restart under load, as behind a load balancer: two nodes on one
/// Redis; long-polling subscribers and a publisher on node A, which gets SIGTERM
/// in the middle of the publishing. Each client goes on with node B when A
/// stops answering it (resending a connect that got no answer, as Faye's client
/// does). Every publish acknowledged, by either node, reaches every subscriber,
/// and A exits cleanly within its bound.
#[tokio::test]
async fn sigterm_under_load_loses_no_acknowledged_publish() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use faye_testkit::redis::RedisServer;

    const SUBSCRIBERS: usize = 8;
    let redis = RedisServer::start();
    let url = redis.url();
    let engine = ["--engine", "redis", "--redis-url", url.as_str(), "--redis-namespace", "drain"];
    let mut a =
        Node::start(&[&engine[..], &["--drain-timeout", "5", "--timeout", "5"]].concat()).await;
    let b = Node::start(&[&engine[..], &["--timeout", "5"]].concat()).await;
    let nodes = [a.addr, b.addr];

    /// One Bayeux client talking to node A until A fails it, then to B.
    struct Client {
        conn: Option<HttpConn>,
        node: usize,
        nodes: [SocketAddr; 2],
        next_id: u64,
    }
    impl Client {
        /// Sends `message` (given the next id) until a node answers 200; a
        /// failure on A moves the client to B for good.
        async fn send(&mut self, mut message: Value) -> Vec<Value> {
            message["id"] = json!(self.next_id.to_string());
            self.next_id += 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                assert!(Instant::now() < deadline, "no node answered {message}");
                if self.conn.is_none() {
                    match HttpConn::connect(self.nodes[self.node]).await {
                        Ok(conn) => self.conn = Some(conn),
                        Err(_) => {
                            self.node = 1;
                            continue;
                        }
                    }
                }
                let request = Request::post("/bayeux").json(&json!([message.clone()]));
                let conn = self.conn.as_mut().unwrap();
                match tokio::time::timeout(Duration::from_secs(10), conn.call(&request)).await {
                    Ok(Ok(res)) if res.status == 200 => {
                        if res.header("connection") == Some("close") {
                            self.conn = None;
                        }
                        let replies = res.json().as_array().unwrap().clone();
                        // Refused while shutting down: go on elsewhere.
                        if replies[0]["error"].as_str().is_some_and(|e| e.starts_with("503:")) {
                            self.conn = None;
                            self.node = 1;
                            continue;
                        }
                        return replies;
                    }
                    _ => {
                        self.conn = None;
                        self.node = 1;
                    }
                }
            }
        }
    }
    let client = move || Client { conn: None, node: 0, nodes, next_id: 1 };
    let handshake_msg = json!({"channel": "/meta/handshake", "version": "1.0",
                               "supportedConnectionTypes": ["long-polling"]});

    let done = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = client();
        let id = c.send(handshake_msg.clone()).await[0]["clientId"].as_str().unwrap().to_owned();
        let reply = c
            .send(json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/load"}))
            .await;
        assert_eq!(reply[0]["successful"], true);
        let done = done.clone();
        subscribers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let replies = c
                    .send(json!({"channel": "/meta/connect", "clientId": id,
                                 "connectionType": "long-polling", "advice": {"timeout": 1000}}))
                    .await;
                assert_eq!(replies[0]["successful"], true, "{replies:?}");
                got.extend(
                    replies
                        .iter()
                        .filter(|m| m["channel"] == "/load")
                        .map(|m| m["data"].as_u64().unwrap()),
                );
            }
            (got, c.node)
        }));
    }

    // The publisher: as fast as acknowledgements come, for two seconds.
    let publisher = tokio::spawn(async move {
        let mut c = client();
        let id = c.send(handshake_msg).await[0]["clientId"].as_str().unwrap().to_owned();
        let mut acked = Vec::new();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            let reply = c.send(json!({"channel": "/load", "clientId": id, "data": n})).await;
            if reply[0]["successful"] == true {
                acked.push(n);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (acked, c.node)
    });

    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(5) + Duration::from_secs(2)).await;
    assert!(status.success(), "node A's exit: {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(6), "took {:?}", signalled.elapsed());

    let (acked, node) = within(Duration::from_secs(20), "the publisher", publisher).await.unwrap();
    assert_eq!(node, 1, "the publisher never moved to node B");
    assert!(acked.len() > 50, "too little load: {} publishes", acked.len());
    // Let the subscribers take what is left, then stop them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    for task in subscribers {
        let (got, node) = within(Duration::from_secs(20), "a subscriber", task).await.unwrap();
        assert_eq!(node, 1, "a subscriber never moved to node B");
        let missing: Vec<_> = acked.iter().filter(|n| !got.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged publishes missing: {missing:?}",
            missing.len(),
            acked.len()
        );
    }
    drop(b);
}

/// Connections and bytes on the main listener.
#[tokio::test]
async fn metrics_count_connections_and_bytes() {
    let node = Node::start(&[]).await;
    let mut conn = HttpConn::connect(node.addr).await.unwrap();
    let host = node.addr.to_string();
    let mut sent = 0;
    let mut received = 0;
    for _ in 0..3 {
        let request = Request::post("/bayeux").json(&json!([{"channel": "/meta/handshake",
            "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]));
        sent += request.to_bytes(&host).len();
        let res = within(QUICK, "a handshake", conn.call(&request)).await.unwrap();
        assert_eq!(res.status, 200);
        // What went on the wire: status line, headers, blank line, body.
        let head: usize = res.headers.iter().map(|(n, v)| n.len() + 2 + v.len() + 2).sum();
        received += "HTTP/1.1 200 OK\r\n".len() + head + 2 + res.body.len();
    }
    // A write is counted just after the kernel took it, so the client can read a
    // reply a moment before its bytes are counted (a preempted server thread,
    // on a busy machine): wait for the count, then check it is exact.
    let start = Instant::now();
    let scraped = loop {
        let scraped = node.scrape().await;
        let sent_total =
            scraped.iter().find(|(n, _)| n == "faye_http_bytes_sent_total").map(|(_, v)| *v);
        if sent_total >= Some(received as f64) || start.elapsed() > QUICK {
            break scraped;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let value = |name: &str| scraped.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(value("faye_http_connections"), Some(1.0));
    assert_eq!(value("faye_http_bytes_received_total"), Some(sent as f64));
    assert_eq!(value("faye_http_bytes_sent_total"), Some(received as f64));
    drop(conn);
    let start = Instant::now();
    while node.metric("faye_http_connections").await != 0.0 {
        assert!(start.elapsed() < QUICK, "the closed connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A subscriber that never takes its messages is dropped when its queue is
/// full, and counted.
#[tokio::test]
async fn metrics_count_slow_consumers_dropped() {
    let node = Node::start(&["--max-queue", "3"]).await;
    let mut sub = HttpConn::connect(node.addr).await.unwrap();
    let mut publ = HttpConn::connect(node.addr).await.unwrap();
    let a = handshake(&mut sub).await;
    subscribe(&mut sub, &a, "/news").await;
    let b = handshake(&mut publ).await;
    assert_eq!(node.metric("faye_slow_consumers_dropped_total").await, 0.0);
    for i in 0..5 {
        post(&mut publ, json!([{"channel": "/news", "clientId": b, "data": i}])).await;
    }
    assert_eq!(node.metric("faye_slow_consumers_dropped_total").await, 1.0);
    assert_eq!(node.metric("faye_sessions").await, 1.0, "the slow subscriber's session ended");
}

/// The Redis engine counts each reconnection after Redis was away.
#[tokio::test]
async fn metrics_count_redis_reconnects() {
    let redis = faye_testkit::redis::RedisServer::start();
    let node = Node::start(&["--engine", "redis", "--redis-url", &redis.url()]).await;
    assert_eq!(node.metric("faye_redis_reconnects_total").await, 0.0);
    redis.restart();
    let start = Instant::now();
    while node.metric("faye_redis_reconnects_total").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(15), "no reconnection counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
