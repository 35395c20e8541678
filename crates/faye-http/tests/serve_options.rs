//! `serve_with`'s options: health checks only when asked for, and a drain that
//! ends within its bound however stuck a request is.

use std::time::{Duration, Instant};

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService, ServeOptions};
use faye_server::{Server, ServerOptions};
use faye_testkit::QUICK;
use faye_testkit::http::{HttpConn, Request, fetch};
use faye_testkit::server::bind;

fn faye() -> FayeService<MemoryEngine> {
    FayeService::new(
        Server::new(MemoryEngine::new(), ServerOptions::default()),
        FayeOptions::default(),
    )
}

#[tokio::test]
async fn health_checks_only_when_asked_for() {
    let (listener, plain) = bind().await;
    tokio::spawn(faye_http::serve(listener, faye(), std::future::pending()));
    let res = fetch(plain, &Request::get("/healthz")).await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (404, "Sure you're not looking for /bayeux ?"));

    let (listener, checked) = bind().await;
    let options = ServeOptions::default().health(true);
    tokio::spawn(faye_http::serve_with(listener, faye(), std::future::pending(), options));
    let res = fetch(checked, &Request::get("/healthz")).await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (200, "ok\n"));
    let res = fetch(checked, &Request::get("/readyz")).await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn the_drain_ends_within_its_bound() {
    let (listener, addr) = bind().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = faye();
    let server = service.server().clone();
    let options = ServeOptions::default().health(true).drain_timeout(Duration::from_millis(500));
    let serving = tokio::spawn(faye_http::serve_with(
        listener,
        service,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    // A request whose body never comes.
    let mut stuck = HttpConn::connect(addr).await.unwrap();
    stuck
        .write_raw(b"POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n[")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    stop.send(()).unwrap();
    faye_testkit::within(QUICK, "serve_with to return", serving).await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(450), "returned before the bound: {took:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(server.is_shutting_down());
    assert_eq!(server.ready(Duration::from_secs(1)).await, Err("shutting down".to_owned()));
}

/// POSTs one Bayeux message as JSON; the reply batch.
async fn bayeux(addr: std::net::SocketAddr, message: serde_json::Value) -> serde_json::Value {
    let request = Request::new("POST", "/bayeux")
        .headers(&[("Content-Type", "application/json")])
        .body(message.to_string());
    let res = fetch(addr, &request).await.unwrap();
    serde_json::from_str(&res.text()).unwrap()
}

#[tokio::test]
async fn the_landing_and_status_pages_only_when_asked_for() {
    let (listener, plain) = bind().await;
    tokio::spawn(faye_http::serve(listener, faye(), std::future::pending()));
    for path in ["/", "/status"] {
        let res = fetch(plain, &Request::get(path)).await.unwrap();
        assert_eq!(res.status, 404, "{path}");
    }

    let (listener, landing) = bind().await;
    let options = ServeOptions::default().landing_page(true);
    tokio::spawn(faye_http::serve_with(listener, faye(), std::future::pending(), options));
    let res = fetch(landing, &Request::get("/")).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(res.text().contains("<a href=\"/bayeux/client.js\">"), "{}", res.text());
    assert!(!res.text().contains("/status"), "{}", res.text());
    assert_eq!(fetch(landing, &Request::get("/status")).await.unwrap().status, 404);

    let (listener, status) = bind().await;
    let options = ServeOptions::default().landing_page(true).status_page(true);
    tokio::spawn(faye_http::serve_with(listener, faye(), std::future::pending(), options));
    let res = fetch(status, &Request::get("/")).await.unwrap();
    assert!(res.text().contains("<a href=\"/status\">"), "{}", res.text());
    let res = fetch(status, &Request::get("/status")).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    let page = res.text();
    assert!(page.contains("<script src=\"/bayeux/client.js\"></script>"), "{page}");
    assert!(page.contains("const MOUNT = \"/bayeux\";"), "{page}");
    assert!(page.contains(faye_http::STATUS_CHANNEL), "{page}");
}

#[tokio::test]
async fn the_status_channel_carries_snapshots_and_refuses_others_publishes() {
    use serde_json::json;
    let (listener, addr) = bind().await;
    let options = ServeOptions::default().status_page(true);
    tokio::spawn(faye_http::serve_with(listener, faye(), std::future::pending(), options));
    let reply = bayeux(addr, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})).await;
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let reply = bayeux(
        addr,
        json!({"channel":"/meta/subscribe","clientId":id,"subscription":faye_http::STATUS_CHANNEL}),
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let reply =
        bayeux(addr, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/chat/*"}))
            .await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let reply = bayeux(addr, json!({"channel":"/chat/a","clientId":id,"data":{"n":1}})).await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    // Nobody but the server publishes on the status channel.
    let reply = bayeux(
        addr,
        json!({"channel":faye_http::STATUS_CHANNEL,"clientId":id,"data":{"fake":true}}),
    )
    .await;
    assert_eq!(reply[0]["successful"], false, "{reply}");
    assert_eq!(reply[0]["error"], "403:/faye-rs/status:Forbidden", "{reply}");

    // The connects return the snapshots published meanwhile (one per tick).
    let mut snapshot = None;
    for _ in 0..10 {
        let reply = bayeux(
            addr,
            json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}),
        )
        .await;
        // The first snapshot may predate the publish.
        let found = reply
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|m| m["channel"] == faye_http::STATUS_CHANNEL && m["data"]["published"] == 1)
            .cloned();
        if let Some(found) = found {
            snapshot = Some(found["data"].clone());
            break;
        }
    }
    let s = snapshot.expect("a status snapshot within 10 connects");
    assert_eq!(s["published"], 1, "{s}");
    assert_eq!(s["delivered"], 1, "{s}");
    assert_eq!(s["clients"]["long-polling"], 1, "{s}");
    // This client, and the server's own publisher (in-process).
    assert_eq!(s["clientCount"], 2, "{s}");
    assert_eq!(s["channelCount"], 2, "{s}");
    assert!(
        s["channels"].as_array().unwrap().contains(&json!({"channel":"/chat/*","subscribers":1})),
        "{s}"
    );
    assert!(s["time"].as_u64().unwrap() > 0);
}
