//! EventSource (§4.6): `GET <mount>/<clientId>` with `Accept: text/event-stream`.
//! The stream carries deliveries; the client sends everything else by POST.

use std::time::Duration;

use bytes::Bytes;
use faye_engine::Engine;
use faye_protocol::{EncodedMessage, encode_batch};
use faye_server::{Push, Socket};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::cors::{PageBy, refuse_foreign};
use crate::{FayeBody, FayeService, request_info, text};

/// faye-websocket's keep-alive interval when `ping` is not set.
const DEFAULT_PING: Duration = Duration::from_secs(10);

/// A GET whose `Accept` list includes `text/event-stream`.
pub(crate) fn is_event_source<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().unwrap_or("").trim() == "text/event-stream")
}

/// Opens the stream for the client named by the last path segment, if it exists
/// (Faye binds whatever the URL names; an unknown client here gets 404).
pub(crate) async fn open<E: Engine, B>(
    svc: &FayeService<E>,
    req: Request<B>,
) -> Response<FayeBody> {
    // The stream's reply has no CORS headers, but the request alone would bind the
    // client's deliveries to a foreign page's stream.
    if let Some(refused) = refuse_foreign(&svc.shared.options, req.headers(), PageBy::Origin) {
        return refused;
    }
    let client = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
    let request = request_info(req.into_parts().0, "eventsource");
    let socket = svc.server().socket(Arc::unwrap_or_clone(request));
    if !socket.attach(&client).await {
        return text(StatusCode::NOT_FOUND, "Unknown client");
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let ping = svc.shared.options.ping.unwrap_or(DEFAULT_PING);
    svc.shared.sockets.spawn(pump(socket, tx, ping));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(Frame::data(chunk)), rx))
    });
    let mut res = Response::new(StreamBody::new(frames).boxed());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    res
}

/// One event: `data: <JSON array>` and a blank line. JSON has no raw newlines.
fn event(messages: &[EncodedMessage]) -> Bytes {
    let json = encode_batch(messages);
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\r\n\r\n");
    out.into()
}

/// Writes the stream until the session ends, the server shuts down, or the
/// browser goes away (the receiver is dropped).
async fn pump<E: Engine>(socket: Socket<E>, tx: mpsc::Sender<Bytes>, ping: Duration) {
    if tx.send(Bytes::from_static(b"retry: 5000\r\n\r\n")).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Kept across turns so that messages taken from the engine are always sent.
    let mut push = std::pin::pin!(socket.next_push());
    loop {
        let chunk = tokio::select! {
            next = &mut push => {
                push.set(socket.next_push());
                match next {
                    Push::Messages(messages) => event(&messages),
                    // Connects are never parked on an EventSource stream (they
                    // come over HTTP).
                    Push::Replies(_) => continue,
                    Push::Closed | Push::Unbound => return,
                }
            }
            _ = keepalive.tick() => Bytes::from_static(b":\r\n\r\n"),
            _ = tx.closed() => return,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}
