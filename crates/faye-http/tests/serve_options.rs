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
