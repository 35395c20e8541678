//! Two `faye serve --engine redis` processes on one Redis act as one service: a
//! client that handshakes on one node, subscribes and publishes through the
//! other, and long-polls on the first receives its message. On one redis-server,
//! on a Redis Cluster (`--redis-cluster`), and behind Sentinel
//! (`redis+sentinel://`).

use faye_testkit::QUICK;
use faye_testkit::http::{Request, fetch};
use faye_testkit::redis::{RedisCluster, RedisServer, Sentinel};
use faye_testkit::server::FayeProcess;
use serde_json::{Value, json};

async fn post(node: &FayeProcess, body: Value) -> Value {
    let reply = faye_testkit::within(
        QUICK,
        "a reply",
        fetch(node.addr(), &Request::post("/bayeux").json(&body)),
    )
    .await
    .expect("a response");
    assert_eq!(reply.status, 200, "{}", reply.body_str());
    reply.json()
}

#[tokio::test]
async fn a_message_published_on_one_node_reaches_a_client_polling_another() {
    let redis = RedisServer::start();
    let args = ["--engine", "redis", "--redis-url", &redis.url(), "--redis-namespace", "cli"];
    one_service(&args, &args).await;
}

#[tokio::test]
async fn the_same_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    // Seeds comma-separated on one node, repeated on the other.
    let seeds = urls[..2].join(",");
    let a = ["--engine", "redis", "--redis-cluster", "--redis-url", &seeds];
    let b =
        ["--engine", "redis", "--redis-cluster", "--redis-url", &urls[1], "--redis-url", &urls[2]];
    one_service(&a, &b).await;
}

#[tokio::test]
async fn the_same_behind_sentinel() {
    let redis = RedisServer::start();
    let sentinel = Sentinel::start("cli", redis.port, 0);
    let url = format!("redis+sentinel://{}/cli", sentinel.addr());
    let args = ["--engine", "redis", "--redis-url", &url];
    one_service(&args, &args).await;
}

async fn one_service(a_args: &[&str], b_args: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_faye");
    let a = FayeProcess::serve(bin, a_args).await;
    let b = FayeProcess::serve(bin, b_args).await;

    let hs = post(
        &a,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    let id = hs[0]["clientId"].as_str().expect("a clientId").to_owned();
    let sub =
        post(&b, json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/news"}]))
            .await;
    assert_eq!(sub[0]["successful"], true, "node B knows the session made on A: {sub}");
    let publish = post(&b, json!([{"channel": "/news", "data": {"headline": "hi"}}])).await;
    assert_eq!(publish[0]["successful"], true, "{publish}");

    let connect = post(
        &a,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
                "advice": {"timeout": 3000}}]),
    )
    .await;
    let delivered: Vec<&Value> =
        connect.as_array().unwrap().iter().filter(|m| m["channel"] == "/news").collect();
    assert_eq!(delivered.len(), 1, "{connect}");
    assert_eq!(delivered[0]["data"], json!({"headline": "hi"}));
}

/// `/readyz` follows the engine: 503 while Redis does not answer, 200 again once
/// it does; `/healthz` stays 200.
#[tokio::test]
async fn readyz_says_when_redis_does_not_answer() {
    let redis = RedisServer::start();
    let node = FayeProcess::serve(
        env!("CARGO_BIN_EXE_faye"),
        &["--engine", "redis", "--redis-url", &redis.url(), "--redis-namespace", "ready"],
    )
    .await;
    let addr = node.addr();
    let get = |path: &'static str| async move {
        let limit = std::time::Duration::from_secs(10);
        faye_testkit::within(limit, path, fetch(addr, &Request::get(path)))
            .await
            .expect("a response")
    };
    let ready = get("/readyz").await;
    assert_eq!((ready.status, ready.body_str()), (200, "ready\n"));
    redis.pause();
    let ready = get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body_str());
    assert!(ready.body_str().starts_with("not ready: engine unreachable"), "{}", ready.body_str());
    assert_eq!(get("/healthz").await.status, 200);
    redis.resume();
    let start = std::time::Instant::now();
    while get("/readyz").await.status != 200 {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "never ready again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
