//! Bounds on what one client or socket can make the server hold (issue 16), with
//! tokio's clock paused.

use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_protocol::{decode_batch, encode_batch};
use faye_server::{Context, Push, RequestInfo, Server, ServerOptions, Socket};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

fn server() -> Server<MemoryEngine> {
    Server::new(MemoryEngine::new(), ServerOptions::default().timeout(T))
}

async fn send(
    server: &Server<MemoryEngine>,
    ctx: &Context<'_, MemoryEngine>,
    request: Value,
) -> Value {
    let batch = decode_batch(request.to_string().as_bytes()).unwrap();
    let replies = server.process(batch, ctx).await;
    serde_json::from_slice(&encode_batch(&replies)).unwrap()
}

/// One request from a remote client (each request has its own context).
async fn remote(server: &Server<MemoryEngine>, request: Value) -> Value {
    send(server, &Context::remote(Default::default()), request).await
}

async fn handshake(server: &Server<MemoryEngine>) -> String {
    let ctx = Context::remote(Default::default());
    let reply = send(server, &ctx, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]})).await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

fn connect(id: &str) -> Value {
    json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket"})
}

async fn over_socket(
    server: &Server<MemoryEngine>,
    socket: &Socket<MemoryEngine>,
    request: Value,
) -> Value {
    send(server, &Context::on_socket(socket), request).await
}

#[tokio::test(start_paused = true)]
async fn a_socket_holds_at_most_one_connect() {
    let server = server();
    let id = handshake(&server).await;
    let socket = server.socket(RequestInfo::default());
    let start = Instant::now();
    let mut connects: FuturesUnordered<_> = (0..100)
        .map(|_| async { (over_socket(&server, &socket, connect(&id)).await, start.elapsed()) })
        .collect();
    let mut answered_at_once = 0;
    let mut held = Vec::new();
    while let Some((reply, elapsed)) = connects.next().await {
        assert_eq!(reply[0]["successful"], true, "{reply}");
        assert_eq!(reply[0]["advice"]["reconnect"], "retry", "{reply}");
        if elapsed.is_zero() {
            answered_at_once += 1;
        } else {
            held.push(elapsed);
        }
    }
    assert_eq!(answered_at_once, 99, "every connect but the newest is answered at once");
    assert_eq!(held, [T], "the newest is held for the timeout");
}

#[tokio::test(start_paused = true)]
async fn moving_a_socket_between_clients_does_not_pile_up_held_connects() {
    let server = server();
    let ids = [handshake(&server).await, handshake(&server).await];
    let socket = server.socket(RequestInfo::default());
    let start = Instant::now();
    let mut connects: FuturesUnordered<_> = (0..20)
        .map(|i| {
            let id = &ids[i % 2];
            let socket = &socket;
            let server = &server;
            async move { (over_socket(server, socket, connect(id)).await, start.elapsed()) }
        })
        .collect();
    let mut held = 0;
    while let Some((reply, elapsed)) = connects.next().await {
        assert_eq!(reply[0]["successful"], true, "{reply}");
        if !elapsed.is_zero() {
            held += 1;
        }
    }
    assert_eq!(held, 1);
}

fn handshake_message() -> Value {
    json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})
}

#[tokio::test]
async fn one_request_creates_at_most_one_client() {
    let server = server();
    let reply =
        remote(&server, json!([handshake_message(), handshake_message(), handshake_message()]))
            .await;
    let replies = reply.as_array().unwrap();
    assert_eq!(replies.len(), 3);
    let created: Vec<_> = replies.iter().filter(|r| r["successful"] == true).collect();
    assert_eq!(created.len(), 1, "{reply}");
    assert!(created[0]["clientId"].is_string());
    for refused in replies.iter().filter(|r| r["successful"] != true) {
        assert_eq!(refused["error"], "400::Too many handshakes in one request");
        assert_eq!(refused["advice"], json!({"reconnect":"handshake","interval":10_000}));
        assert!(refused.get("clientId").is_none(), "{refused}");
    }
    // The cap is per request: the next one gets its client.
    let reply = remote(&server, handshake_message()).await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
}

#[tokio::test]
async fn the_handshake_cap_per_request_is_configurable() {
    let server = Server::new(
        MemoryEngine::new(),
        ServerOptions::default().timeout(T).max_handshakes_per_request(3),
    );
    let batch = json!([handshake_message(), handshake_message(), handshake_message()]);
    let reply = remote(&server, batch).await;
    assert!(reply.as_array().unwrap().iter().all(|r| r["successful"] == true), "{reply}");
}

#[tokio::test]
async fn past_max_clients_handshakes_are_refused_until_a_client_leaves() {
    let server =
        Server::new(MemoryEngine::new(), ServerOptions::default().timeout(T).max_clients(2));
    let first = remote(&server, handshake_message()).await;
    let id = first[0]["clientId"].as_str().unwrap().to_owned();
    remote(&server, handshake_message()).await;
    let refused = remote(&server, handshake_message()).await;
    assert_eq!(
        refused,
        json!([{"channel":"/meta/handshake","successful":false,"error":"503::Too many clients",
            "version":"1.0","supportedConnectionTypes":["long-polling","cross-origin-long-polling","callback-polling","websocket","eventsource","in-process"],
            "advice":{"reconnect":"handshake","interval":10_000}}])
    );
    // The in-process client is the application's own: never refused.
    let local = server.client().await.expect("the in-process client");
    let disconnect = json!({"channel":"/meta/disconnect","clientId":id});
    assert_eq!(remote(&server, disconnect).await[0]["successful"], true);
    local.disconnect().await.unwrap();
    let reply = remote(&server, handshake_message()).await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_begins_handshakes_and_connects_are_refused_at_once() {
    let server = server();
    let id = handshake(&server).await;
    server.shutdown().await;
    let start = Instant::now();
    let reply = remote(&server, handshake_message()).await;
    assert_eq!(reply[0]["successful"], false, "{reply}");
    assert_eq!(reply[0]["error"], "503::Server shutting down");
    assert_eq!(reply[0]["advice"], json!({"reconnect":"handshake","interval":1000}));
    assert!(reply[0].get("clientId").is_none());

    let reply = remote(
        &server,
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}),
    )
    .await;
    assert_eq!(
        reply,
        json!([{"channel":"/meta/connect","clientId":id,"successful":false,"error":"503::Server shutting down",
            "advice":{"reconnect":"retry","interval":1000}}])
    );
    let socket = server.socket(RequestInfo::default());
    let reply = over_socket(&server, &socket, connect(&id)).await;
    assert_eq!(reply[0]["error"], "503::Server shutting down");
    assert_eq!(socket.client_id(), None, "a refused connect binds nothing");
    assert!(start.elapsed().is_zero(), "nothing was held");
}

#[tokio::test(start_paused = true)]
async fn a_socket_with_no_client_for_the_timeout_is_told_to_close() {
    let server = server();
    let never_bound = server.socket(RequestInfo::default());
    let start = Instant::now();
    assert!(matches!(never_bound.next_push().await, Push::Unbound));
    assert_eq!(start.elapsed(), T);

    // An EventSource stream whose client was taken over by a newer stream.
    let id = handshake(&server).await;
    let old = server.socket(RequestInfo { transport: "eventsource", ..Default::default() });
    assert!(old.attach(&id).await);
    let new = server.socket(RequestInfo { transport: "eventsource", ..Default::default() });
    assert!(new.attach(&id).await);
    let start = Instant::now();
    assert!(matches!(old.next_push().await, Push::Unbound));
    assert_eq!(start.elapsed(), T);
    assert_eq!(old.client_id(), None);
}
