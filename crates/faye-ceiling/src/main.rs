//! The ceiling: a deliberately minimal WebSocket pub/sub server that speaks just
//! enough Bayeux for `faye-bench`'s WebSocket scenarios (chat, fanout, rooms,
//! idle) and its long-polling fan-out, so `bench/compare` can show what this
//! machine can do at all beside what faye-rs does. **Not a product, and not
//! Faye**: no validation, no sessions to expire, no wildcards, no extensions, no
//! limits, no ordering across connections, no timeouts; on a WebSocket a
//! `/meta/connect` is never answered (the benchmark's runs are shorter than any
//! client's timeout).
//!
//! What it does is what the scenarios need, as cheaply as it can: a publish's
//! delivery is serialized once and shared by every subscriber; each connection
//! sends everything queued for it as one frame, in one write, per wake-up.
//!
//! Long-polling: a connection whose first bytes are `POST` is served as
//! kept-alive HTTP/1.1 (a hand-rolled parser: request line and headers up to a
//! blank line, a `Content-Length` body, nothing else). Handshake makes a session
//! (clientId → outbox), subscribe and connect find it by clientId, and a
//! `/meta/connect` is held until the session has mail, then answered with the
//! connect reply and everything queued, as one response in one write. Anything
//! not `POST` (the publisher's WebSocket) is served as before.
//!
//! ```text
//! faye-ceiling [--port 0]     prints: faye-ceiling listening on http://127.0.0.1:PORT/bayeux
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage, Utf8Bytes};

/// One message of a request batch: only the fields the scenarios use.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    channel: &'a str,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    subscription: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, rename = "clientId")]
    client_id: Option<&'a str>,
}

/// A connection's outbox: shared batches (`[{...}]`, a delivery or replies),
/// and a wake-up for its task. Nothing is allocated while it is empty.
#[derive(Default)]
struct Outbox {
    queue: Mutex<Vec<Bytes>>,
    ready: Notify,
}

impl Outbox {
    fn send(&self, batch: Bytes) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(batch);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Default)]
struct Hub {
    channels: Mutex<HashMap<String, Vec<Arc<Outbox>>>>,
    next_id: AtomicU64,
    /// Long-polling sessions: clientId → its outbox.
    sessions: Mutex<HashMap<String, Arc<Outbox>>>,
}

impl Hub {
    fn subscribe(&self, channel: &str, outbox: &Arc<Outbox>) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.entry(channel.to_owned()).or_default().push(outbox.clone());
    }

    fn publish(&self, channel: &str, data: &RawValue) {
        let mut delivery = Vec::with_capacity(channel.len() + data.get().len() + 26);
        delivery.extend_from_slice(b"[{\"channel\":");
        // Channel names are plain ASCII in the scenarios; serde_json quotes them.
        let _ = serde_json::to_writer(&mut delivery, channel);
        delivery.extend_from_slice(b",\"data\":");
        delivery.extend_from_slice(data.get().as_bytes());
        delivery.extend_from_slice(b"}]");
        let delivery = Bytes::from(delivery);
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outboxes) = channels.get(channel) {
            for outbox in outboxes {
                outbox.send(delivery.clone());
            }
        }
    }
}

fn reply(out: &mut Vec<u8>, msg: &Request<'_>, extra: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"channel\":");
    let _ = serde_json::to_writer(&mut *out, msg.channel);
    out.extend_from_slice(b",\"successful\":true");
    if let Some(id) = msg.id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.get().as_bytes());
    }
    out.extend_from_slice(extra.as_bytes());
    out.push(b'}');
}

async fn serve(hub: Arc<Hub>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Long-polling clients POST; WebSocket upgrades are GETs.
    let mut first = [0u8; 4];
    loop {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n < first.len() => tokio::task::yield_now().await,
            Ok(_) => break,
        }
    }
    if &first == b"POST" {
        return serve_http(hub, stream).await;
    }
    let config = WebSocketConfig::default().read_buffer_size(512).write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let mut ws = ws;
    let outbox = Arc::new(Outbox::default());
    // One task per connection, reading and writing in turn.
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return };
                if let WsMessage::Text(text) = frame {
                    handle(&hub, &outbox, text.as_str());
                }
            }
            () = outbox.ready.notified() => {
                // Everything queued goes out as one frame; one batch alone is
                // sent as it is, shared with the other recipients.
                let batches = outbox.take();
                let batch = match batches.as_slice() {
                    [] => continue,
                    [one] => one.clone(),
                    [first, rest @ ..] => {
                        let mut frame = Vec::with_capacity(first.len() * batches.len());
                        frame.extend_from_slice(&first[..first.len() - 1]);
                        for next in rest {
                            frame.push(b',');
                            frame.extend_from_slice(&next[1..next.len() - 1]);
                        }
                        frame.push(b']');
                        Bytes::from(frame)
                    }
                };
                let text = Utf8Bytes::try_from(batch).unwrap_or_default();
                if ws.send(WsMessage::Text(text)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Applies one request batch; its replies go to `outbox` as one batch.
fn handle(hub: &Hub, outbox: &Arc<Outbox>, text: &str) {
    let Ok(batch) = serde_json::from_str::<Vec<Request<'_>>>(text) else { return };
    let mut out = vec![b'['];
    for msg in &batch {
        match msg.channel {
            "/meta/handshake" => {
                let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                let extra = format!(
                    ",\"clientId\":\"c{id}\",\"version\":\"1.0\",\"supportedConnectionTypes\":[\"websocket\"]"
                );
                reply(&mut out, msg, &extra);
            }
            "/meta/subscribe" => {
                if let Some(channel) = msg.subscription {
                    hub.subscribe(channel, outbox);
                }
                reply(&mut out, msg, "");
            }
            // Held for ever: the scenarios never wait for its reply.
            "/meta/connect" => {}
            "/meta/disconnect" => reply(&mut out, msg, ""),
            channel => {
                if let Some(data) = msg.data {
                    hub.publish(channel, data);
                }
                reply(&mut out, msg, "");
            }
        }
    }
    if out.len() > 1 {
        out.push(b']');
        outbox.send(Bytes::from(out));
    }
}

/// Kept-alive HTTP/1.1 long-polling: one request at a time, each answered with
/// one write.
async fn serve_http(hub: Arc<Hub>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut response = Vec::with_capacity(1024);
    loop {
        // The head, then the body, in `buf` (a pipelined next request stays there).
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if read_more(&mut stream, &mut buf).await.is_none() {
                return;
            }
        };
        let Some(length) = content_length(&buf[..head_end]) else { return };
        while buf.len() < head_end + length {
            if read_more(&mut stream, &mut buf).await.is_none() {
                return;
            }
        }
        let body = std::str::from_utf8(&buf[head_end..head_end + length]).unwrap_or("");
        let Ok(batch) = serde_json::from_str::<Vec<Request<'_>>>(body) else { return };
        let mut out = vec![b'['];
        let mut held: Option<Arc<Outbox>> = None;
        for msg in &batch {
            match msg.channel {
                "/meta/handshake" => {
                    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                    let client_id = format!("c{id}");
                    let extra = format!(
                        ",\"clientId\":\"{client_id}\",\"version\":\"1.0\",\"supportedConnectionTypes\":[\"long-polling\"]"
                    );
                    hub.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(client_id, Arc::default());
                    reply(&mut out, msg, &extra);
                }
                "/meta/subscribe" => {
                    if let (Some(channel), Some(outbox)) = (msg.subscription, hub.session(msg)) {
                        hub.subscribe(channel, &outbox);
                    }
                    reply(&mut out, msg, "");
                }
                "/meta/connect" => {
                    held = hub.session(msg);
                    reply(&mut out, msg, "");
                }
                "/meta/disconnect" => {
                    if let Some(client_id) = msg.client_id {
                        hub.sessions
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(client_id);
                    }
                    reply(&mut out, msg, "");
                }
                channel => {
                    if let Some(data) = msg.data {
                        hub.publish(channel, data);
                    }
                    reply(&mut out, msg, "");
                }
            }
        }
        drop(batch);
        buf.drain(..head_end + length);
        if let Some(outbox) = held {
            // Held until there is mail; then everything queued goes with the reply.
            let batches = loop {
                let batches = outbox.take();
                if !batches.is_empty() {
                    break batches;
                }
                outbox.ready.notified().await;
            };
            for batch in &batches {
                out.push(b',');
                out.extend_from_slice(&batch[1..batch.len() - 1]);
            }
        }
        out.push(b']');
        response.clear();
        response.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ",
        );
        response.extend_from_slice(out.len().to_string().as_bytes());
        response.extend_from_slice(b"\r\n\r\n");
        response.extend_from_slice(&out);
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Reads what is there into `buf`; `None` at the end of the stream or an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(()),
    }
}

/// The `Content-Length` of a request head (0 without one).
fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            return value.trim().parse().ok();
        }
    }
    Some(0)
}

impl Hub {
    /// The long-polling session a message's clientId names.
    fn session(&self, msg: &Request<'_>) -> Option<Arc<Outbox>> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(msg.client_id?).cloned()
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("faye-ceiling listening on http://{}/bayeux", listener.local_addr()?);
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(hub.clone(), stream));
    }
}
