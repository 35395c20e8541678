//! WebSocket on the mount path (§4.5): JSON arrays in text frames, replies to one
//! frame in one frame, deliveries pushed as they arrive, batched per frame.
//! With [`FayeOptions::websocket_deflate`](crate::FayeOptions::websocket_deflate),
//! `permessage-deflate` is negotiated (see `deflate/`).

use std::time::Duration;

use bytes::Bytes;
use faye_engine::Engine;
use faye_protocol::{DecodeError, EncodedMessage, decode_batch_limited, encode_batch};
use faye_server::{Context, Push};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use std::sync::Arc;

use faye_server::RequestInfo;

use crate::cors::{PageBy, refuse_foreign};
use crate::deflate::{self, DeflateIo, WindowBits};
use crate::{FayeBody, FayeService, bad_request, full, request_info};

fn header_has(req: &Request<impl Sized>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A GET asking to upgrade to WebSocket.
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET && header_has(req, header::UPGRADE, "websocket")
}

/// Answers the opening handshake and runs the socket once hyper hands it over.
pub(crate) fn upgrade<E: Engine, B: Send + 'static>(
    svc: FayeService<E>,
    mut req: Request<B>,
) -> Response<FayeBody> {
    // Browsers let any page open a socket, cookies included: only Origin tells.
    if let Some(refused) = refuse_foreign(&svc.shared.options, req.headers(), PageBy::Origin) {
        return refused;
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true) =
        (key, version_ok, header_has(&req, header::CONNECTION, "upgrade"))
    else {
        return bad_request();
    };
    let deflate =
        if svc.shared.options.websocket_deflate { deflate::negotiate(req.headers()) } else { None };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let request = request_info(req.into_parts().0, "websocket");
    let tracker = svc.shared.sockets.clone();
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let opts = &svc.shared.options;
                // tungstenite's defaults are 128 KiB buffers per socket. An idle Faye
                // socket keeps its read buffer for life, and a Faye client's frames
                // are mostly a few hundred bytes (a connect is about 120): 512 bytes
                // a read. A larger frame still arrives whole, in more reads; 1 KiB
                // cost idle sockets 0.5 KiB more each for one read saved on frames
                // between 512 bytes and 1 KiB.
                let config = WebSocketConfig::default()
                    .read_buffer_size(512)
                    .write_buffer_size(0)
                    .max_message_size(Some(opts.max_request_bytes))
                    .max_frame_size(Some(opts.max_request_bytes));
                let io = TokioIo::new(upgraded);
                if let Some(agreed) = deflate {
                    let inflater = deflate::inflate::Inflater::new(
                        agreed.client_no_context_takeover,
                        opts.max_request_bytes,
                    );
                    let io = DeflateIo::new(io, inflater);
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    // Boxed: its stream carries the inflater, and the task of every
                    // socket would otherwise have room for it.
                    Box::pin(run(&svc, ws, request, Some(agreed.server_window()))).await;
                } else {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    run(&svc, ws, request, None).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(agreed) = deflate {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, agreed.response());
    }
    res
}

/// A text message, compressed (RSV1 set) within the `deflate` window when that was
/// negotiated and makes it shorter.
fn text_frame(json: Bytes, deflate: Option<WindowBits>) -> WsMessage {
    let compressed = deflate.and_then(|window| deflate::compress(&json, window));
    message(json, compressed)
}

/// The frame for a push. A push of one message is the same for every recipient
/// socket, so it is framed when it is published and, with deflate, compressed by
/// the first socket that sends it, for all of them. That shared copy uses the full
/// window; the rare socket that asked for a smaller one compresses its own.
fn push_frame(messages: &[EncodedMessage], deflate: Option<WindowBits>) -> WsMessage {
    match messages {
        [shared] if deflate == Some(WindowBits::MAX) => message(
            shared.batch(),
            shared.derived(|batch| deflate::compress(batch, WindowBits::MAX)),
        ),
        _ => text_frame(encode_batch(messages), deflate),
    }
}

/// `json` as a text message, or `compressed` in its place when there is one.
fn message(json: Bytes, compressed: Option<Bytes>) -> WsMessage {
    if let Some(compressed) = compressed {
        let mut frame = Frame::message(compressed, OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        return WsMessage::Frame(frame);
    }
    // A text frame as it is: serde_json wrote it, so it is UTF-8 (checking
    // again, once per recipient, was ~1% of a fan-out's CPU).
    WsMessage::Frame(Frame::message(json, OpCode::Data(Data::Text), true))
}

/// Most frames whose replies one socket may have pending, and most bytes those
/// frames may hold. Past either the socket's frames are not read until replies
/// drain, so a client that sends faster than its batches complete is slowed
/// down (TCP back-pressure) rather than growing the server. Faye's WebSocket
/// transport sends every message in a frame of its own, so a burst of publishes
/// is hundreds of frames; the limit must let the frame after them (the client's
/// next `/meta/connect`) be read before the burst is through, or, with an engine
/// whose publishes take a round trip, its reply comes later than the client
/// waits (1.2 x the timeout) and the client drops the socket and resends.
const MAX_PENDING_FRAMES: usize = 1024;
const MAX_PENDING_BYTES: usize = 1 << 20;

/// The frames a socket is processing. A `FuturesUnordered` only while there are
/// some: even empty, one keeps two allocations (about 170 bytes with the
/// allocator's), and an idle socket has none in flight.
struct Pending<F> {
    set: Option<FuturesUnordered<F>>,
}

impl<F: Future> Pending<F> {
    fn len(&self) -> usize {
        self.set.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, frame: F) {
        self.set.get_or_insert_with(FuturesUnordered::new).push(frame);
    }

    /// The next frame done; `None` at once if there are none. Cancel-safe.
    async fn next(&mut self) -> Option<F::Output> {
        let set = self.set.as_mut()?;
        let done = set.next().await;
        if set.is_empty() {
            self.set = None;
        }
        done
    }
}

/// The next ping time, or never when pings are off.
async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Serves one socket; `deflate`: compress server text messages within that window.
///
/// Not an `async fn`: one copies its arguments into the future's body, and the
/// stream would take room twice in every socket's task. The block below uses
/// them where they were captured.
#[allow(clippy::manual_async_fn)]
fn run<E, S>(
    svc: &FayeService<E>,
    // Read and written in turn by this task, one stream for both directions:
    // split, it would sit behind a lock the two halves share.
    mut ws: WebSocketStream<S>,
    request: Arc<RequestInfo>,
    deflate: Option<WindowBits>,
) -> impl Future<Output = ()>
where
    E: Engine,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async move {
        let server = svc.server();
        let socket = server.socket(Arc::unwrap_or_clone(request));
        let max_batch = svc.shared.options.max_batch;
        let mut pending = Pending { set: None };
        let mut pending_bytes = 0usize;
        let mut ping = svc.shared.options.ping.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        // Set once the bound session ends, the server shuts down or no client was bound
        // for the timeout: replies still pending are sent, then the socket is closed
        // with this frame.
        let mut closing: Option<CloseFrame> = None;
        // Kept across loop turns: once the engine hands over messages they must be sent,
        // so this future is never dropped half-way.
        let mut push = std::pin::pin!(socket.next_push());
        let close: Option<CloseFrame> = loop {
            if closing.is_some() && pending.is_empty() {
                break closing;
            }
            let out = tokio::select! {
                frame = ws.next(), if closing.is_none()
                    && pending.len() < MAX_PENDING_FRAMES
                    && pending_bytes < MAX_PENDING_BYTES => match frame {
                    // Faye reads a binary frame's bytes as it reads text.
                    Some(Ok(frame @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                        let text = frame.into_data();
                        match decode_batch_limited(&text, max_batch) {
                            Err(DecodeError::TooMany { .. }) => {
                                let reason = format!("more than {max_batch} messages in one frame");
                                break Some(CloseFrame { code: CloseCode::Policy, reason: reason.into() });
                            }
                            Ok(batch) => {
                                // A held connect waits on the socket as data, its
                                // reply (and those to the rest of its frame) sent
                                // from `next_push` as Push::Replies.
                                let ctx = Context::on_socket(&socket).park_connects();
                                let bytes = text.len();
                                pending_bytes += bytes;
                                // Boxed: `FuturesUnordered` keeps a stub task the size
                                // of its future while it has any.
                                pending.push(Box::pin(async move {
                                    let replies = server.process(batch, &ctx).await;
                                    // No reply yet for a frame with a parked connect;
                                    // a frame all of whose messages extensions dropped
                                    // is answered `[]`, as in Faye.
                                    let none = ctx.parked_a_connect();
                                    (if none { None } else { Some(encode_batch(&replies)) }, bytes)
                                }));
                            }
                            // Faye ignores a frame it cannot parse and keeps the socket.
                            Err(e) => tracing::debug!(error = %e, "ignored a WebSocket frame"),
                        }
                        None
                    }
                    Some(Ok(WsMessage::Close(_))) | None => break None,
                    Some(Ok(_)) => None,
                    Some(Err(WsError::Capacity(e))) => {
                        break Some(CloseFrame { code: CloseCode::Size, reason: e.to_string().into() });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        break None;
                    }
                },
                Some((reply, bytes)) = pending.next() => {
                    pending_bytes -= bytes;
                    reply.map(|reply| text_frame(reply, deflate))
                }
                next = &mut push, if closing.is_none() => {
                    push.set(socket.next_push());
                    match next {
                        Push::Messages(messages) => Some(push_frame(&messages, deflate)),
                        Push::Replies(replies) => Some(text_frame(encode_batch(&replies), deflate)),
                        Push::Closed => {
                            closing = Some(CloseFrame { code: CloseCode::Normal, reason: "".into() });
                            None
                        }
                        Push::Unbound => {
                            let reason = "no client bound within the timeout";
                            closing = Some(CloseFrame { code: CloseCode::Policy, reason: reason.into() });
                            None
                        }
                    }
                }
                _ = tick(&mut ping) => Some(WsMessage::Ping(Bytes::new())),
            };
            if let Some(frame) = out
                && ws.send(frame).await.is_err()
            {
                break None;
            }
        };
        // Boxed: only a closing socket needs its state (a timer among it), and an
        // open one would otherwise carry the room for it.
        Box::pin(close_socket(&mut ws, close)).await;
    }
}

/// Sends our close frame, or flushes the reply tungstenite queued to the
/// client's; a peer that stopped reading does not hold the task up.
async fn close_socket<S>(ws: &mut WebSocketStream<S>, close: Option<CloseFrame>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(frame) = close {
            let _ = ws.send(WsMessage::Close(Some(frame))).await;
        }
        let _ = SinkExt::close(ws).await;
    })
    .await;
}
