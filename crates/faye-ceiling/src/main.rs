//! The ceiling: a deliberately minimal WebSocket pub/sub server that speaks just
//! enough Bayeux for `faye-bench`'s WebSocket scenarios (chat, fanout, rooms,
//! idle), so `bench/compare` can show what this machine can do at all beside
//! what faye-rs does. **Not a product, and not Faye**: no validation, no
//! sessions to expire, no wildcards, no extensions, no limits, no ordering
//! across connections, no long-polling; a `/meta/connect` is never answered
//! (the benchmark's runs are shorter than any client's timeout).
//!
//! What it does is what the scenarios need, as cheaply as it can: a publish's
//! delivery is serialized once and shared by every subscriber; each connection
//! sends everything queued for it as one frame, in one write, per wake-up.
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
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0);
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
