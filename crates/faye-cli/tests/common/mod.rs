//! Shared helpers for the black-box wire tests: the real `faye` binary and the
//! Bayeux exchanges the tests repeat, over `faye-testkit`'s raw HTTP/1.1 and
//! WebSocket clients. Assertions are made on the bytes the server sends.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use faye_testkit::http::{Request, Response, fetch};
use faye_testkit::server::FayeProcess;
use faye_testkit::within;
use faye_testkit::ws::Ws;
use serde_json::{Value, json};

/// Faye's `CONNECTION_TYPES`, in Faye's order (spec §1.1).
pub const CONNECTION_TYPES: [&str; 6] = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
    "eventsource",
    "in-process",
];

/// `supportedConnectionTypes` as it appears in every handshake reply.
pub fn connection_types() -> Value {
    json!(CONNECTION_TYPES)
}

/// The advice a successful long-poll handshake or connect carries (spec §1.9)
/// on a server started with `--timeout secs`.
pub fn retry_advice(timeout_secs: u64) -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": timeout_secs * 1000})
}

/// The advice attached to a failed handshake or connect (spec §1.9).
pub fn handshake_advice() -> Value {
    json!({"reconnect": "handshake"})
}

/// Replace the value of every `clientId` key (at any depth) with `"[clientId]"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if k == "clientId" && v.is_string() {
                        (k.clone(), Value::String("[clientId]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Replace every string equal to `"$CID"` (and every `"$CID"` inside a string)
/// with the given client id. Used to write golden tables with a placeholder.
pub fn with_cid(value: &Value, cid: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("$CID", cid)),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), with_cid(v, cid))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| with_cid(v, cid)).collect()),
        other => other.clone(),
    }
}

/// True for a Faye client id: 31 characters of `[0-9a-z]` (spec §1.1).
pub fn is_faye_client_id(id: &str) -> bool {
    id.len() == 31 && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `faye serve` child process, killed when dropped.
pub struct Server {
    process: FayeProcess,
    /// The port it listens on.
    pub port: u16,
    /// The `--timeout` it was started with, in seconds.
    pub timeout: u64,
}

impl Server {
    /// `faye serve --host 127.0.0.1 --port 0 --mount /bayeux --timeout SECS`.
    pub async fn start(timeout_secs: u64) -> Self {
        Self::start_with(timeout_secs, &[]).await
    }

    /// As [`Server::start`] with extra command-line arguments.
    pub async fn start_with(timeout_secs: u64, extra: &[&str]) -> Self {
        let timeout_arg = timeout_secs.to_string();
        let mut args = vec!["--mount", "/bayeux", "--timeout", &timeout_arg];
        args.extend_from_slice(extra);
        let process = FayeProcess::serve(env!("CARGO_BIN_EXE_faye"), &args).await;
        let port = process.port;
        assert_eq!(
            process.listening,
            format!("faye-rs listening on http://127.0.0.1:{port}/bayeux"),
            "unexpected first stdout line"
        );
        Self { process, port, timeout: timeout_secs }
    }

    /// `ws://127.0.0.1:PORT/bayeux`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/bayeux", self.port)
    }

    /// One raw HTTP request to this server on a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let limit = Duration::from_secs(self.timeout + 15);
        let request = Request::new(method, path).headers(headers).body(body);
        within(limit, "an HTTP response", fetch(self.process.addr(), &request))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// POST a body with the given content type to `/bayeux`.
    pub async fn post_raw(&self, content_type: &str, body: &[u8]) -> Response {
        self.request("POST", "/bayeux", &[("Content-Type", content_type)], body).await
    }

    /// POST `message` as `application/json` to `/bayeux`.
    pub async fn post_json(&self, message: &Value) -> Response {
        self.post_raw("application/json", message.to_string().as_bytes()).await
    }

    /// POST `message` as JSON, check the HTTP envelope (200, JSON content type)
    /// and return the reply array.
    pub async fn bayeux(&self, message: &Value) -> Value {
        let res = self.post_json(message).await;
        assert_eq!(res.status, 200, "POST {message} answered {} {:?}", res.status, res.text());
        assert_eq!(
            res.header("content-type"),
            Some("application/json; charset=utf-8"),
            "content type of the reply to {message}"
        );
        let value = res.json();
        assert!(value.is_array(), "reply to {message} is not an array: {value}");
        value
    }

    /// A successful long-polling handshake; returns the new client id.
    pub async fn handshake(&self) -> String {
        let reply = self
            .bayeux(&json!({
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling", "websocket"],
            }))
            .await;
        let cid = reply[0]["clientId"]
            .as_str()
            .unwrap_or_else(|| panic!("handshake failed: {reply}"))
            .to_owned();
        assert_eq!(reply[0]["successful"], json!(true), "handshake: {reply}");
        cid
    }

    /// Subscribe `cid` to `subscription` (a string or an array) and check the
    /// exact success reply (spec §1.7).
    pub async fn subscribe(&self, cid: &str, subscription: Value) {
        let reply = self
            .bayeux(&json!({
                "channel": "/meta/subscribe",
                "clientId": cid,
                "subscription": subscription,
            }))
            .await;
        assert_eq!(
            reply,
            json!([{
                "clientId": cid,
                "channel": "/meta/subscribe",
                "successful": true,
                "subscription": subscription,
            }])
        );
    }

    /// Publish `message` (a full message object) and check the success reply.
    pub async fn publish_message(&self, message: Value) {
        let reply = self.bayeux(&message).await;
        assert_eq!(reply.as_array().map(Vec::len), Some(1), "{reply}");
        assert_eq!(reply[0]["successful"], json!(true), "publish {message}: {reply}");
        assert_eq!(reply[0]["channel"], message["channel"], "{reply}");
    }

    /// Publish `data` on `channel` without any client id.
    pub async fn publish(&self, channel: &str, data: Value) {
        self.publish_message(json!({"channel": channel, "data": data})).await;
    }

    /// A long-polling `/meta/connect`, with `extra` fields merged into the
    /// message. Returns the reply array and how long the server took.
    pub async fn connect_with(&self, cid: &str, extra: Value) -> (Value, Duration) {
        let mut msg = json!({
            "channel": "/meta/connect",
            "clientId": cid,
            "connectionType": "long-polling",
        });
        if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        let started = Instant::now();
        let limit = Duration::from_secs(self.timeout + 10);
        let reply = within(limit, "a /meta/connect reply", self.bayeux(&msg)).await;
        (reply, started.elapsed())
    }

    /// A `/meta/connect` with `advice: {timeout: 0}`: returns at once.
    pub async fn connect_now(&self, cid: &str) -> Value {
        self.connect_with(cid, json!({"advice": {"timeout": 0}})).await.0
    }

    /// The exact successful connect reply for `cid` (spec §1.7, §1.9).
    pub fn connect_ok(&self, cid: &str) -> Value {
        json!({
            "clientId": cid,
            "channel": "/meta/connect",
            "successful": true,
            "advice": retry_advice(self.timeout),
        })
    }

    /// Open a WebSocket to the mount.
    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.ws_url()).await
    }

    /// Kill the child now (it is also killed on drop).
    pub async fn stop(self) {
        self.process.stop().await;
    }
}
