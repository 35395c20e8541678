//! The token-auth extension, enforced on every transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions, TokenAuth};
use faye_testkit::http::{Request, fetch};
use faye_testkit::ws::Ws;
use faye_testkit::{QUICK, form, within};
use serde_json::{Value, json};

async fn start() -> (SocketAddr, Server<MemoryEngine>) {
    let server =
        Server::new(MemoryEngine::new(), ServerOptions::default().timeout(Duration::from_secs(2)));
    server.add_extension(Arc::new(
        TokenAuth::new()
            .subscribe("/private/**", ["reader", "admin"])
            .publish("/private/**", ["admin"]),
    ));
    let faye = FayeService::new(server.clone(), FayeOptions::default());
    (faye_testkit::server::serve(faye).await, server)
}

/// A transport under test: sends one batch and returns the parsed reply.
enum Transport {
    Post,
    Jsonp,
    WebSocket(Box<Ws>),
}

async fn http(addr: SocketAddr, request: Request) -> String {
    let response = within(QUICK, "an HTTP response", fetch(addr, &request)).await.unwrap();
    response.body_str().to_owned()
}

impl Transport {
    async fn send(&mut self, addr: SocketAddr, message: Value) -> Value {
        let batch = json!([message]);
        let json = batch.to_string();
        match self {
            Self::Post => {
                let req = Request::post("/bayeux").header("Content-Type", "application/json");
                serde_json::from_str(&http(addr, req.body(json)).await).unwrap()
            }
            Self::Jsonp => {
                let query = form(&[("jsonp", "cb"), ("message", &json)]);
                let body = http(addr, Request::get(&format!("/bayeux?{query}"))).await;
                serde_json::from_str(
                    body.strip_prefix("/**/cb(").unwrap().strip_suffix(");").unwrap(),
                )
                .unwrap()
            }
            Self::WebSocket(ws) => ws.call(&batch).await,
        }
    }
}

async fn transports(addr: SocketAddr) -> Vec<(&'static str, Transport)> {
    let ws = Ws::connect(&format!("ws://{addr}/bayeux")).await;
    vec![
        ("long-polling", Transport::Post),
        ("callback-polling", Transport::Jsonp),
        ("websocket", Transport::WebSocket(Box::new(ws))),
    ]
}

#[tokio::test]
async fn tokens_are_required_for_protected_channels_on_every_transport() {
    let (addr, _server) = start().await;
    for (name, mut t) in transports(addr).await {
        let hs = t
            .send(addr, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}))
            .await;
        let id = hs[0]["clientId"].as_str().unwrap().to_owned();
        let sub = |channel: &str, token: Option<&str>| {
            let mut m = json!({"channel":"/meta/subscribe","clientId":id,"subscription":channel});
            if let Some(token) = token {
                m["ext"] = json!({"authToken": token});
            }
            m
        };
        let cases = [
            (sub("/private/room", None), Some("403:/private/room:Authentication required")),
            (
                sub("/private/room", Some("wrong")),
                Some("403:/private/room:Authentication required"),
            ),
            (sub("/**", None), Some("403:/**:Authentication required")),
            (sub("/*", None), None),
            (sub("/public/news", None), None),
            (sub("/private/**", Some("reader")), None),
            (
                json!({"channel":"/private/room","data":1}),
                Some("403:/private/room:Authentication required"),
            ),
            (
                json!({"channel":"/private/room","data":1,"ext":{"authToken":"reader"}}),
                Some("403:/private/room:Authentication required"),
            ),
            (json!({"channel":"/private/room","data":1,"ext":{"authToken":"admin"}}), None),
            (json!({"channel":"/public/news","data":1}), None),
        ];
        for (request, error) in cases {
            let reply = t.send(addr, request.clone()).await;
            assert_eq!(reply[0]["successful"], error.is_none(), "{name}: {request} -> {reply}");
            if let Some(error) = error {
                assert_eq!(reply[0]["error"], error, "{name}: {request}");
            }
        }
    }
}

#[tokio::test]
async fn tokens_never_reach_subscribers_and_the_in_process_client_is_trusted() {
    let (addr, server) = start().await;
    let mut t = Transport::Post;
    let hs = t.send(addr, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})).await;
    let id = hs[0]["clientId"].as_str().unwrap().to_owned();
    let sub = json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/private/room","ext":{"authToken":"reader"}});
    assert_eq!(t.send(addr, sub).await[0]["successful"], true);

    t.send(addr, json!({"channel":"/private/room","data":"from admin","ext":{"authToken":"admin","other":1}})).await;
    let back_end = server.client().await.unwrap();
    back_end.publish("/private/room", &"from the back end").await.unwrap();

    let connect = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}});
    let reply = t.send(addr, connect).await;
    assert_eq!(
        &reply.as_array().unwrap()[1..],
        [
            json!({"channel":"/private/room","data":"from admin","ext":{"other":1}}),
            json!({"channel":"/private/room","data":"from the back end"})
        ]
    );
}
