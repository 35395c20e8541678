//! The embedding examples, exercised: the app's own routes and Faye on one port.

#[allow(dead_code)]
#[path = "../examples/axum_app.rs"]
mod axum_app;
#[allow(dead_code)]
#[path = "../examples/hyper_attach.rs"]
mod hyper_attach;

use std::net::SocketAddr;
use std::time::Duration;

use faye_testkit::http::{Request, fetch};
use faye_testkit::server::bind;
use faye_testkit::within;
use faye_testkit::ws::Ws;
use serde_json::{Value, json};

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = Request::new(method, path).header("Content-Type", "application/json").body(body);
    let response =
        within(Duration::from_secs(10), "an HTTP response", fetch(addr, &request)).await.unwrap();
    (response.status, String::from_utf8(response.body).unwrap())
}

async fn bayeux(addr: SocketAddr, path: &str, message: Value) -> Value {
    let (status, body) = http(addr, "POST", path, &message.to_string()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Handshake, subscribe, publish and a long-poll connect that returns the message.
async fn round_trip(addr: SocketAddr, path: &str) {
    let hs = bayeux(addr, path, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})).await;
    let id = hs[0]["clientId"].as_str().unwrap().to_owned();
    let sub = bayeux(
        addr,
        path,
        json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/news"}),
    )
    .await;
    assert_eq!(sub[0]["successful"], true);
    let publish =
        bayeux(addr, path, json!({"channel":"/news","data":{"headline":"embedded"}})).await;
    assert_eq!(publish[0]["successful"], true);
    let connect = bayeux(
        addr,
        path,
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}),
    )
    .await;
    assert_eq!(connect[1], json!({"channel":"/news","data":{"headline":"embedded"}}));
}

#[tokio::test]
async fn the_axum_app_serves_its_pages_and_faye_under_a_sub_path() {
    let (router, _faye) = axum_app::app(Some(b"window.Faye = {};".to_vec()));
    let (listener, addr) = bind().await;
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (status, body) = http(addr, "GET", "/health", "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, page) = http(addr, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("/node/myapp/faye/client.js"));
    let (status, script) = http(addr, "GET", "/node/myapp/faye/client.js", "").await;
    assert_eq!((status, script.as_str()), (200, "window.Faye = {};"));
    round_trip(addr, axum_app::FAYE_PATH).await;

    // A WebSocket through the router: the upgrade reaches Faye.
    let url = format!("ws://{addr}{}", axum_app::FAYE_PATH);
    let mut ws = Ws::connect(&url).await;
    let hs = json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]);
    let reply = ws.call(&hs).await;
    assert_eq!(reply[0]["successful"], true);
}

#[tokio::test]
async fn faye_attached_to_a_hyper_app_leaves_other_paths_to_the_app() {
    let (listener, addr) = bind().await;
    tokio::spawn(hyper_attach::serve(listener, hyper_attach::attached()));

    let (status, body) = http(addr, "GET", "/", "").await;
    assert_eq!((status, body.as_str()), (200, "hello from the app at /"));
    let (_, body) = http(addr, "GET", "/fayes", "").await;
    assert_eq!(body, "hello from the app at /fayes", "only the mount and below belong to Faye");
    round_trip(addr, "/faye").await;
    round_trip(addr, "/faye/").await;
}
