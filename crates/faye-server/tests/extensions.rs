//! Extensions, monitoring events and the in-process client, as users see them.

mod common;

use common::{handshake, send};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_protocol::{Message, decode_batch, encode_batch};
use faye_server::{
    BoxFuture, ClientError, Context, Event, Extension, Push, RequestInfo, Server, ServerOptions,
};
use serde_json::{Value, json};

fn server() -> Server<MemoryEngine> {
    Server::new(MemoryEngine::new(), ServerOptions::default().timeout(Duration::from_secs(10)))
}

fn quick_connect(id: &str) -> Value {
    json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}})
}

/// An extension written as a closure over the message, for tests.
struct Hook<F>(F, bool);

impl<F> Extension for Hook<F>
where
    F: Fn(Message, Option<&RequestInfo>) -> Option<Message> + Send + Sync + 'static,
{
    fn incoming<'a>(
        &'a self,
        m: Message,
        r: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        let out = if self.1 { (self.0)(m, r) } else { Some(m) };
        Box::pin(async move { out })
    }
    fn outgoing<'a>(
        &'a self,
        m: Message,
        r: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        let out = if self.1 { Some(m) } else { (self.0)(m, r) };
        Box::pin(async move { out })
    }
}

fn incoming<F>(f: F) -> Arc<dyn Extension>
where
    F: Fn(Message, Option<&RequestInfo>) -> Option<Message> + Send + Sync + 'static,
{
    Arc::new(Hook(f, true))
}

fn outgoing<F>(f: F) -> Arc<dyn Extension>
where
    F: Fn(Message, Option<&RequestInfo>) -> Option<Message> + Send + Sync + 'static,
{
    Arc::new(Hook(f, false))
}

/// Faye's classic subscription auth, comparing the channel exactly.
fn subscription_auth() -> Arc<dyn Extension> {
    incoming(|mut m, _| {
        let token = m.ext.as_ref().and_then(|e| e.get("token")).and_then(Value::as_str);
        if m.channel.as_deref() == Some("/meta/subscribe") && token != Some("let-me-in") {
            m.error = Some("403::Authentication required".into());
        }
        Some(m)
    })
}

#[tokio::test]
async fn an_incoming_extension_rejects_a_subscription_with_its_error() {
    let server = server();
    server.add_extension(subscription_auth());
    let id = handshake(&server).await;
    let denied =
        send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/secret"}))
            .await;
    assert_eq!(
        denied,
        json!([{"clientId":id,"channel":"/meta/subscribe","successful":false,"error":"403::Authentication required","subscription":"/secret"}])
    );
    let allowed = send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/open","ext":{"token":"let-me-in"}})).await;
    assert_eq!(allowed[0]["successful"], true);
    send(&server, json!({"channel":"/secret","data":1})).await;
    send(&server, json!({"channel":"/open","data":2})).await;
    let delivered = send(&server, quick_connect(&id)).await;
    assert_eq!(&delivered.as_array().unwrap()[1..], [json!({"channel":"/open","data":2})]);
}

#[tokio::test]
async fn a_meta_channel_with_extra_segments_cannot_bypass_auth() {
    // CVE-2020-11020: /meta/subscribe/x was handled as /meta/subscribe while the auth
    // extension, comparing exactly, let it through.
    let server = server();
    server.add_extension(subscription_auth());
    let id = handshake(&server).await;
    for channel in ["/meta/subscribe/x", "/meta/subscribe/", "/meta/Subscribe"] {
        let reply =
            send(&server, json!({"channel":channel,"clientId":id,"subscription":"/secret"})).await;
        assert_eq!(reply[0]["successful"], false, "{channel}");
    }
    let reply = send(
        &server,
        json!({"channel":"/meta/subscribe/x","clientId":id,"subscription":"/secret"}),
    )
    .await;
    assert_eq!(reply[0]["error"], "403:/meta/subscribe/x:Forbidden channel");
    send(&server, json!({"channel":"/secret","data":"leak"})).await;
    assert_eq!(
        send(&server, quick_connect(&id)).await.as_array().unwrap().len(),
        1,
        "nothing delivered"
    );
}

#[tokio::test]
async fn a_dropped_incoming_message_gets_no_reply_and_has_no_effect() {
    let server = server();
    server.add_extension(incoming(|m, _| (m.channel.as_deref() != Some("/dropped")).then_some(m)));
    let id = handshake(&server).await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/dropped"}))
        .await;
    let reply =
        send(&server, json!([{"channel":"/dropped","data":1},{"channel":"/kept","data":2}])).await;
    assert_eq!(reply, json!([{"channel":"/kept","successful":true}]));
    assert_eq!(send(&server, quick_connect(&id)).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn subscribers_get_what_incoming_extensions_made_of_a_publish() {
    let server = server();
    server.add_extension(incoming(|mut m, _| {
        if let Some(ext) = m.ext.as_mut().and_then(Value::as_object_mut) {
            ext.remove("password");
        }
        m.extra.push(("tagged".into(), serde_json::value::to_raw_value(&true).unwrap()));
        Some(m)
    }));
    let id = handshake(&server).await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/t"})).await;
    send(&server, json!({"channel":"/t","data":"x","ext":{"password":"hunter2","keep":1}})).await;
    let reply = send(&server, quick_connect(&id)).await;
    assert_eq!(reply[1], json!({"channel":"/t","data":"x","ext":{"keep":1},"tagged":true}));
}

#[tokio::test]
async fn outgoing_extensions_see_replies_and_each_recipients_copy_in_order() {
    let server = server();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    server.add_extension(outgoing(move |mut m, req| {
        log.lock().unwrap().push((m.channel.clone().unwrap_or_default(), req.map(|r| r.transport)));
        m.ext = Some(json!({"first": true}));
        Some(m)
    }));
    server.add_extension(outgoing(|mut m, _| {
        // Runs second: sees what the first one did.
        let first = m.ext.as_ref().is_some_and(|e| e["first"] == true);
        m.ext = Some(json!({"first": first, "second": true}));
        (m.channel.as_deref() != Some("/hidden")).then_some(m)
    }));
    let a = handshake(&server).await;
    let b = handshake(&server).await;
    for id in [&a, &b] {
        send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/**"}))
            .await;
    }
    let ack =
        send(&server, json!([{"channel":"/news","data":1},{"channel":"/hidden","data":2}])).await;
    assert_eq!(
        ack,
        json!([{"channel":"/news","successful":true,"ext":{"first":true,"second":true}}])
    );
    for id in [&a, &b] {
        let reply = send(&server, quick_connect(id)).await;
        assert_eq!(
            &reply.as_array().unwrap()[1..],
            [json!({"channel":"/news","data":1,"ext":{"first":true,"second":true}})]
        );
    }
    let seen = seen.lock().unwrap();
    let news_copies = seen.iter().filter(|(c, _)| c == "/news").count();
    assert_eq!(news_copies, 3, "the publish ack and one copy per recipient");
    assert!(seen.iter().all(|(_, t)| *t == Some("long-polling")));
}

#[tokio::test]
async fn outgoing_extensions_run_on_socket_pushes_with_the_sockets_request() {
    let server = server();
    server.add_extension(outgoing(|mut m, req| {
        if m.data.is_some() {
            m.ext = Some(json!({"via": req.map(|r| r.transport)}));
        }
        Some(m)
    }));
    let id = handshake(&server).await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/ws"})).await;
    let socket = server.socket(RequestInfo { transport: "websocket", ..Default::default() });
    let connect = json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket","advice":{"timeout":0}});
    let batch = decode_batch(connect.to_string().as_bytes()).unwrap();
    server.process(batch, &Context::on_socket(&socket)).await;
    send(&server, json!({"channel":"/ws","data":7})).await;
    let Push::Messages(messages) = socket.next_push().await else { panic!("expected a push") };
    let pushed: Value = serde_json::from_slice(&encode_batch(&messages)).unwrap();
    assert_eq!(pushed, json!([{"channel":"/ws","data":7,"ext":{"via":"websocket"}}]));
}

#[tokio::test]
async fn an_extension_added_after_a_socket_opened_sees_the_request_that_opened_it() {
    let server = server();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, http::HeaderValue::from_static("session=abc; x=1"));
    headers.append("x-test", http::HeaderValue::from_static("one"));
    headers.append("x-test", http::HeaderValue::from_static("two"));
    let socket = server.socket(RequestInfo {
        transport: "websocket",
        uri: "/bayeux?room=7".parse().unwrap(),
        headers,
        remote_addr: Some("127.0.0.1:4242".parse().unwrap()),
        ..Default::default()
    });
    let on_socket = |message: Value| {
        let batch = decode_batch(message.to_string().as_bytes()).unwrap();
        let server = server.clone();
        let socket = &socket;
        async move { server.process(batch, &Context::on_socket(socket)).await }
    };
    // Handled with no extensions: nothing reads the request yet.
    let reply = on_socket(json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]})).await;
    let reply: Value = serde_json::from_slice(&encode_batch(&reply)).unwrap();
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    server.add_extension(incoming(move |m, req| {
        let req = req.expect("a socket's message has its request");
        let x_test: Vec<_> =
            req.headers.get_all("x-test").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        record.lock().unwrap().push(json!({
            "transport": req.transport,
            "uri": req.uri.to_string(),
            "cookie": req.cookie("session"),
            "x-test": x_test,
            "peer": req.remote_addr.map(|a| a.to_string()),
        }));
        Some(m)
    }));
    on_socket(json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/a"})).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            json!({"transport":"websocket","uri":"/bayeux?room=7","cookie":"abc","x-test":["one","two"],"peer":"127.0.0.1:4242"})
        ]
    );
    assert!(Arc::ptr_eq(socket.request().unwrap(), socket.request().unwrap()), "made once");
}

#[tokio::test]
async fn removed_extensions_stop_running_and_are_told() {
    struct Counting(Arc<Mutex<Vec<&'static str>>>);
    impl Extension for Counting {
        fn incoming<'a>(
            &'a self,
            mut m: Message,
            _: Option<&'a RequestInfo>,
        ) -> BoxFuture<'a, Option<Message>> {
            m.error = Some("403::No".into());
            Box::pin(async move { Some(m) })
        }
        fn added(&self) {
            self.0.lock().unwrap().push("added");
        }
        fn removed(&self) {
            self.0.lock().unwrap().push("removed");
        }
    }
    let server = server();
    let log = Arc::new(Mutex::new(Vec::new()));
    let ext: Arc<dyn Extension> = Arc::new(Counting(log.clone()));
    server.add_extension(ext.clone());
    assert_eq!(send(&server, json!({"channel":"/x","data":1})).await[0]["error"], "403::No");
    server.remove_extension(&ext);
    assert_eq!(send(&server, json!({"channel":"/x","data":1})).await[0]["successful"], true);
    assert_eq!(*log.lock().unwrap(), ["added", "removed"]);
}

fn recorder(server: &Server<MemoryEngine>) -> Arc<Mutex<Vec<String>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    server.on_event(move |event| {
        let line = match event {
            Event::Handshake { .. } => "handshake".to_owned(),
            Event::Subscribe { channel, .. } => format!("subscribe {channel}"),
            Event::Unsubscribe { channel, .. } => format!("unsubscribe {channel}"),
            Event::Publish { client_id, channel, data } => {
                format!("publish {} {channel} {}", client_id.as_deref().unwrap_or("-"), data.get())
            }
            Event::Disconnect { .. } => "disconnect".to_owned(),
            Event::Close { .. } => "close".to_owned(),
            other => format!("{other:?}"),
        };
        log.lock().unwrap().push(line);
    });
    events
}

#[tokio::test]
async fn monitoring_events_follow_fayes_order_and_fire_only_on_change() {
    let server = server();
    let events = recorder(&server);
    let id = handshake(&server).await;
    send(
        &server,
        json!({"channel":"/meta/subscribe","clientId":id,"subscription":["/foo","/bar/*"]}),
    )
    .await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/foo"})).await;
    send(&server, json!({"channel":"/nobody","data":{"a":1},"clientId":"claimed"})).await;
    send(&server, json!({"channel":"/meta/foo","data":1})).await;
    send(&server, json!({"channel":"/invalid/*","data":1})).await;
    send(&server, json!([{"channel":"/meta/unsubscribe","clientId":id,"subscription":"/foo"},{"channel":"/meta/disconnect","clientId":id}])).await;
    let events = events.lock().unwrap();
    assert_eq!(
        *events,
        [
            "handshake",
            "subscribe /foo",
            "subscribe /bar/*",
            "publish claimed /nobody {\"a\":1}",
            "unsubscribe /foo",
            "unsubscribe /bar/*",
            "disconnect",
            "close",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn expiry_reports_unsubscribe_disconnect_and_close() {
    let server = server();
    let events = recorder(&server);
    let id = handshake(&server).await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/a"})).await;
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(
        *events.lock().unwrap(),
        ["handshake", "subscribe /a", "unsubscribe /a", "disconnect", "close"]
    );
}

#[tokio::test]
async fn the_in_process_client_publishes_and_receives_through_the_server() {
    let server = server();
    let client = server.client().await.unwrap();
    let mut room = client.subscribe("/chat/*").await.unwrap();
    let mut again = client.subscribe("/chat/*").await.unwrap();
    let remote = handshake(&server).await;
    send(
        &server,
        json!({"channel":"/meta/subscribe","clientId":remote,"subscription":"/chat/lobby"}),
    )
    .await;

    client.publish("/chat/lobby", &json!({"text":"from the back end"})).await.unwrap();
    send(&server, json!({"channel":"/chat/lobby","data":{"text":"from a browser"}})).await;
    for sub in [&mut room, &mut again] {
        let first = sub.recv().await.unwrap();
        assert_eq!(first.channel, "/chat/lobby");
        assert_eq!(first.data_as::<Value>().unwrap(), json!({"text":"from the back end"}));
        assert_eq!(sub.recv().await.unwrap().data.get(), r#"{"text":"from a browser"}"#);
    }
    let browser = send(&server, quick_connect(&remote)).await;
    assert_eq!(browser[1], json!({"channel":"/chat/lobby","data":{"text":"from the back end"}}));

    match client.publish("/*", &1).await {
        Err(ClientError::Rejected(e)) => assert_eq!(e, "405:/*:Invalid channel"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    client.unsubscribe("/chat/*").await.unwrap();
    assert!(room.recv().await.is_none(), "unsubscribing ends the subscription");
}

#[tokio::test]
async fn the_in_process_client_may_serve_service_channels_that_remote_clients_cannot_subscribe_to()
{
    let server = server();
    let remote = handshake(&server).await;
    let refused = send(
        &server,
        json!({"channel":"/meta/subscribe","clientId":remote,"subscription":"/service/echo"}),
    )
    .await;
    assert_eq!(refused[0]["error"], "403:/service/echo:Forbidden channel");

    let client = server.client().await.unwrap();
    let mut requests = client.subscribe("/service/echo").await.unwrap();
    send(&server, json!({"channel":"/service/echo","data":"ping","clientId":remote})).await;
    assert_eq!(requests.recv().await.unwrap().data.get(), r#""ping""#);
}

#[tokio::test]
async fn the_in_process_client_goes_through_extensions_without_a_request() {
    let server = server();
    server.add_extension(incoming(|mut m, req| {
        if req.is_none() && m.data.is_some() {
            m.extra.push(("local".into(), serde_json::value::to_raw_value(&true).unwrap()));
        }
        Some(m)
    }));
    let remote = handshake(&server).await;
    send(&server, json!({"channel":"/meta/subscribe","clientId":remote,"subscription":"/x"})).await;
    let client = server.client().await.unwrap();
    client.publish("/x", &"hi").await.unwrap();
    let reply = send(&server, quick_connect(&remote)).await;
    assert_eq!(reply[1], json!({"channel":"/x","data":"hi","local":true}));
    client.disconnect().await.unwrap();
}
