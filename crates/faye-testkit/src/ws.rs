//! WebSocket clients: [`Ws`] speaks messages through tokio-tungstenite's client;
//! [`RawWs`] sends and receives single frames, encoded and decoded with
//! tungstenite's frame codec, so a test can send what no well-behaved client
//! would (RSV1 without an agreed extension, compressed payloads, fragments with a
//! control frame between, garbage).

use std::io::{self, Cursor};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{HttpConn, Request, Response, fill};
use crate::{QUICK, within};

/// What the server sent next on a [`Ws`].
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame that parsed as JSON.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame.
    Close(Option<CloseFrame>),
    /// The stream ended (or failed, with the error) without a close frame.
    End(Option<String>),
}

/// A client WebSocket speaking messages; every wait is bounded and fails the test
/// when it runs out.
#[derive(Debug)]
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects to `url` (`ws://…`), failing the test on error.
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = within(QUICK, "the WebSocket upgrade", async {
            tokio_tungstenite::connect_async(url)
                .await
                .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"))
        })
        .await;
        Self { stream }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within(QUICK, "a WebSocket send", self.stream.send(Message::text(text)))
            .await
            .expect("WebSocket send");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: impl Into<Bytes>) {
        within(QUICK, "a WebSocket send", self.stream.send(Message::binary(bytes)))
            .await
            .expect("WebSocket send");
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next message of any kind (pings included), `None` when the stream has
    /// ended; fails the test if nothing arrives within `limit`.
    pub async fn next_message(&mut self, limit: Duration) -> Option<tungstenite::Result<Message>> {
        within(limit, "a WebSocket message", self.stream.next()).await
    }

    /// The next data or close event, or `None` if nothing arrived within `limit`.
    /// Pings and pongs are skipped.
    pub async fn next_event(&mut self, limit: Duration) -> Option<WsEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            let Ok(item) = next else { return None };
            return Some(match item {
                None => WsEvent::End(None),
                Some(Err(e)) => WsEvent::End(Some(e.to_string())),
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => WsEvent::Json(v),
                    Err(_) => WsEvent::Text(t.as_str().to_owned()),
                },
                Some(Ok(Message::Binary(b))) => WsEvent::Binary(b.to_vec()),
                Some(Ok(Message::Close(frame))) => WsEvent::Close(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            });
        }
    }

    /// The next frame, which must be a JSON array, within `limit`.
    pub async fn recv_json(&mut self, limit: Duration) -> Value {
        match self.next_event(limit).await {
            Some(WsEvent::Json(v)) => {
                assert!(v.is_array(), "server frame is not a JSON array: {v}");
                v
            }
            Some(other) => panic!("expected a JSON frame, got {other:?}"),
            None => panic!("no frame within {limit:?}"),
        }
    }

    /// Sends `value` and returns the next frame (a JSON array).
    pub async fn call(&mut self, value: &Value) -> Value {
        self.send_json(value).await;
        self.recv_json(QUICK).await
    }

    /// Closes politely (errors ignored).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.close(None)).await;
    }
}

/// The masking key of [`frame`]: fixed, so that a failing test's bytes repeat.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame (masked, as RFC 6455 requires of clients), ready for
/// [`RawWs::send`]. Adjust it through [`Frame::header_mut`] for anything else.
///
/// ```
/// use faye_testkit::ws::frame;
/// use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
///
/// // A compressed text message (RSV1), in one frame.
/// let f = frame(true, true, OpCode::Data(Data::Text), vec![0xf2, 0x48, 0x05, 0x00]);
/// assert!(f.header().rsv1 && f.header().mask.is_some());
/// ```
pub fn frame(is_final: bool, rsv1: bool, opcode: OpCode, payload: impl Into<Bytes>) -> Frame {
    let header = FrameHeader { is_final, rsv1, opcode, mask: Some(MASK), ..FrameHeader::default() };
    Frame::from_payload(header, payload.into())
}

/// A WebSocket spoken frame by frame over a raw connection.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Sends a WebSocket upgrade for `path` with `headers` added (an extension
    /// offer, say) and reads the answer's head. The connection is returned whatever
    /// the status, so that a refusal can be looked at.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<(Response, Self)> {
        let mut conn = HttpConn::connect(addr).await?;
        let request = Request::get(path)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .headers(headers);
        conn.send(&request).await?;
        let head = conn.read_head().await?;
        Ok((head, conn.into_websocket()))
    }

    pub(crate) fn from_parts(stream: TcpStream, buf: Vec<u8>) -> Self {
        Self { stream, buf }
    }

    /// Sends `frame` exactly as it is (see [`frame`]).
    pub async fn send(&mut self, frame: Frame) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(frame.len());
        frame.format(&mut bytes).map_err(io::Error::other)?;
        self.send_raw(&bytes).await
    }

    /// Writes `bytes` as they are: a malformed frame, a frame in pieces.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next frame from the server, as sent (a masked frame keeps its mask and
    /// masked payload: servers must not mask, and a test may check that).
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            let mut cursor = Cursor::new(&self.buf[..]);
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some((header, len)) = parsed {
                let start = cursor.position() as usize;
                let len = usize::try_from(len).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "frame longer than memory")
                })?;
                if self.buf.len() >= start + len {
                    let payload = Bytes::copy_from_slice(&self.buf[start..start + len]);
                    self.buf.drain(..start + len);
                    return Ok(Frame::from_payload(header, payload));
                }
            }
            if !fill(&mut self.stream, &mut self.buf).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside a frame ({} bytes buffered)", self.buf.len()),
                ));
            }
        }
    }

    /// Everything until the server closes the connection, unparsed, including
    /// what was already read but not handed out.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while fill(&mut self.stream, &mut self.buf).await? {}
        Ok(std::mem::take(&mut self.buf))
    }
}
