//! Server behaviour that depends on time, with tokio's clock paused: held connects,
//! their cap, expiry, wakeups and socket binding.

use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_protocol::{decode_batch, encode_batch};
use faye_server::{Context, Push, RequestInfo, Server, ServerOptions};
use serde_json::{Value, json};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

fn server() -> Server<MemoryEngine> {
    Server::new(MemoryEngine::new(), ServerOptions::default().timeout(T))
}

async fn send(server: &Server<MemoryEngine>, request: Value) -> Value {
    let batch = decode_batch(request.to_string().as_bytes()).unwrap();
    let replies = server.process(batch, &Context::remote(Default::default())).await;
    serde_json::from_slice(&encode_batch(&replies)).unwrap()
}

async fn handshake(server: &Server<MemoryEngine>) -> String {
    let reply = send(server, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})).await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

fn connect(id: &str) -> Value {
    json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})
}

async fn subscribe(server: &Server<MemoryEngine>, id: &str, channel: &str) {
    let reply =
        send(server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":channel}))
            .await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connect_is_held_for_the_timeout() {
    let server = server();
    let id = handshake(&server).await;
    let start = Instant::now();
    let reply = send(&server, connect(&id)).await;
    assert_eq!(start.elapsed(), T);
    assert_eq!(
        reply,
        json!([{"clientId":id,"channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","interval":0,"timeout":10000}}])
    );
}

#[tokio::test(start_paused = true)]
async fn the_hold_is_capped_at_the_server_timeout_and_zero_returns_at_once() {
    let server = server();
    let id = handshake(&server).await;
    let start = Instant::now();
    let mut asks_more = connect(&id);
    asks_more["advice"] = json!({"timeout": 3_600_000});
    send(&server, asks_more).await;
    assert_eq!(start.elapsed(), T);

    let start = Instant::now();
    let mut asks_less = connect(&id);
    asks_less["advice"] = json!({"timeout": 2500});
    send(&server, asks_less).await;
    assert_eq!(start.elapsed(), Duration::from_millis(2500));

    let start = Instant::now();
    let mut asks_none = connect(&id);
    asks_none["advice"] = json!({"timeout": 0});
    send(&server, asks_none).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_publish_wakes_a_held_connect_with_every_message_of_the_same_tick() {
    let server = server();
    let id = handshake(&server).await;
    subscribe(&server, &id, "/chat/*").await;
    let publisher = {
        let server = server.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            send(&server, json!([{"channel":"/chat/a","data":1},{"channel":"/chat/b","data":2}]))
                .await
        }
    };
    let start = Instant::now();
    let (reply, _) = tokio::join!(send(&server, connect(&id)), publisher);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(reply[0]["channel"], "/meta/connect");
    assert_eq!(
        &reply.as_array().unwrap()[1..],
        [json!({"channel":"/chat/a","data":1}), json!({"channel":"/chat/b","data":2})]
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_connect_answers_the_first_at_once() {
    let server = server();
    let id = handshake(&server).await;
    let first = {
        let server = server.clone();
        let id = id.clone();
        async move {
            let reply = send(&server, connect(&id)).await;
            (reply, Instant::now())
        }
    };
    let second = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reply = send(&server, connect(&id)).await;
        (reply, Instant::now())
    };
    let start = Instant::now();
    let ((first, first_at), (second, second_at)) = tokio::join!(first, second);
    assert_eq!(first_at - start, Duration::from_secs(2), "answered when the second arrived");
    assert_eq!(first[0]["successful"], true);
    assert_eq!(first.as_array().unwrap().len(), 1);
    assert_eq!(second_at - start, Duration::from_secs(2) + T);
    assert_eq!(second[0]["successful"], true);
}

#[tokio::test(start_paused = true)]
async fn a_client_expires_twice_the_timeout_after_its_last_connect() {
    let server = server();
    let id = handshake(&server).await;
    let mut quick = connect(&id);
    quick["advice"] = json!({"timeout": 0});
    tokio::time::sleep(2 * T - Duration::from_millis(1)).await;
    assert_eq!(send(&server, quick.clone()).await[0]["successful"], true, "alive, and pinged");
    // Subscribing does not ping, so it probes existence without extending it.
    tokio::time::sleep(2 * T - Duration::from_millis(1)).await;
    subscribe(&server, &id, "/a").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let reply =
        send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/b"})).await;
    assert_eq!(reply[0]["error"], format!("401:{id}:Unknown client"));
    assert_eq!(
        send(&server, quick).await,
        json!([{"channel":"/meta/connect","successful":false,"error":format!("401:{id}:Unknown client"),"advice":{"reconnect":"handshake"}}])
    );
}

#[tokio::test(start_paused = true)]
async fn batch_replies_come_in_completion_order() {
    let server = server();
    let id = handshake(&server).await;
    let reply = send(
        &server,
        json!([connect(&id), {"channel":"/meta/subscribe","clientId":id,"subscription":"/x","id":"s"}]),
    )
    .await;
    assert_eq!(reply[0]["channel"], "/meta/subscribe");
    assert_eq!(reply[1]["channel"], "/meta/connect");
}

#[tokio::test(start_paused = true)]
async fn a_socket_is_bound_only_by_a_valid_connect_and_closed_by_disconnect() {
    let server = server();
    let id = handshake(&server).await;
    subscribe(&server, &id, "/a").await;
    let socket = server.socket(RequestInfo::default());
    let over_socket = |request: Value| {
        let server = server.clone();
        let socket = &socket;
        async move {
            let batch = decode_batch(request.to_string().as_bytes()).unwrap();
            let replies = server.process(batch, &Context::on_socket(socket)).await;
            serde_json::from_slice::<Value>(&encode_batch(&replies)).unwrap()
        }
    };
    let unknown = "0".repeat(31);
    let reply = over_socket(connect(&unknown)).await;
    assert_eq!(reply[0]["error"], format!("401:{unknown}:Unknown client"));
    assert_eq!(socket.client_id(), None, "an unknown client does not bind the socket");

    // A connect on the socket binds it and is held as a heartbeat; pushes flow meanwhile.
    let held = over_socket(connect(&id));
    let pushes = async {
        tokio::task::yield_now().await;
        send(&server, json!({"channel":"/a","data":"hi","clientId":"spoof"})).await;
        let Push::Messages(first) = socket.next_push().await else { panic!("expected messages") };
        send(&server, json!({"channel":"/meta/disconnect","clientId":id})).await;
        let second = socket.next_push().await;
        (first, second)
    };
    let start = Instant::now();
    let (reply, (first, second)) = tokio::join!(held, pushes);
    assert_eq!(&encode_batch(&first)[..], br#"[{"channel":"/a","data":"hi"}]"#);
    assert!(matches!(second, Push::Closed));
    assert_eq!(reply[0]["successful"], true);
    assert!(start.elapsed() < T, "disconnect answered the held connect");
}

#[tokio::test]
async fn limits_refuse_extra_subscriptions_and_overlong_channels() {
    let server = Server::new(
        MemoryEngine::new(),
        ServerOptions::default().max_subscriptions_per_client(2).max_channel_length(16),
    );
    let id = handshake(&server).await;
    let reply = send(
        &server,
        json!({"channel":"/meta/subscribe","clientId":id,"subscription":["/a","/b","/c","/d"]}),
    )
    .await;
    assert_eq!(reply[0]["error"], "403:/c:Too many subscriptions");
    let long = format!("/{}", "x".repeat(16));
    let reply =
        send(&server, json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":long}))
            .await;
    assert_eq!(reply[0]["error"], format!("405:{long}:Invalid channel"));
    let reply = send(&server, json!({"channel":long,"data":1})).await;
    assert_eq!(reply[0]["error"], format!("405:{long}:Invalid channel"));
    // The two that fit were subscribed.
    send(&server, json!({"channel":"/b","data":"kept"})).await;
    let mut quick = connect(&id);
    quick["advice"] = json!({"timeout": 0});
    assert_eq!(send(&server, quick).await[1], json!({"channel":"/b","data":"kept"}));
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_others_keep_receiving() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().max_queue_per_client(3));
    let slow = handshake(&server).await;
    let fast = handshake(&server).await;
    for id in [&slow, &fast] {
        subscribe(&server, id, "/feed").await;
    }
    let quick = |id: &str| {
        let mut c = connect(id);
        c["advice"] = json!({"timeout": 0});
        c
    };
    for i in 0..5 {
        send(&server, json!({"channel":"/feed","data":i})).await;
        let reply = send(&server, quick(&fast)).await;
        assert_eq!(reply[1]["data"], i, "the fast client drains as it goes");
    }
    let reply = send(&server, quick(&slow)).await;
    assert_eq!(reply[0]["error"], format!("401:{slow}:Unknown client"));
    assert_eq!(reply[0]["advice"], json!({"reconnect":"handshake"}));
}

#[tokio::test(start_paused = true)]
async fn an_http_connect_does_not_take_deliveries_away_from_a_socket() {
    // The browser opens its EventSource stream, then sends a long-polling connect.
    let server = server();
    let id = handshake(&server).await;
    subscribe(&server, &id, "/es").await;
    let socket = server.socket(RequestInfo { transport: "eventsource", ..Default::default() });
    assert!(socket.attach(&id).await);
    let mut quick = connect(&id);
    quick["advice"] = json!({"timeout": 0});
    assert_eq!(send(&server, quick).await.as_array().unwrap().len(), 1);
    send(&server, json!({"channel":"/es","data":1})).await;
    let Push::Messages(pushed) = socket.next_push().await else { panic!("expected a push") };
    assert_eq!(&encode_batch(&pushed)[..], br#"[{"channel":"/es","data":1}]"#);
    // Once the socket is gone, HTTP connects deliver again.
    drop(socket);
    send(&server, json!({"channel":"/es","data":2})).await;
    assert_eq!(send(&server, connect(&id)).await[1], json!({"channel":"/es","data":2}));
}

#[tokio::test(start_paused = true)]
async fn any_requested_hold_is_capped_rather_than_a_panic() {
    // Found by the http_request fuzzer: 6.37e275 ms overflowed Duration.
    let server = server();
    let id = handshake(&server).await;
    for timeout in
        [json!(1e300), json!(1.8446744073709552e22), json!(-1e300), json!("soon"), json!(null)]
    {
        let mut request = connect(&id);
        request["advice"] = json!({"timeout": timeout});
        let start = Instant::now();
        let reply = send(&server, request).await;
        assert_eq!(reply[0]["successful"], true, "{timeout}");
        let expected = if timeout == json!(-1e300) { Duration::ZERO } else { T };
        assert_eq!(start.elapsed(), expected, "{timeout}");
    }
}
