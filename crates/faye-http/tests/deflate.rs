//! WebSocket `permessage-deflate` (RFC 7692) over a real socket, with a client
//! that sends raw frames: the handshake's negotiation, compressed frames both
//! ways, the size limit on inflated messages.

use std::net::SocketAddr;
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use faye_testkit::http::Response;
use faye_testkit::ws::{RawWs, frame};
use faye_testkit::{QUICK, within};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

const HANDSHAKE: &str =
    r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]"#;
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// What the server answers a `permessage-deflate` offer it accepts.
const AGREED: &str = "permessage-deflate; server_no_context_takeover";

const TEXT: OpCode = OpCode::Data(Data::Text);
const CONTINUATION: OpCode = OpCode::Data(Data::Continue);
const PING: OpCode = OpCode::Control(Control::Ping);

async fn start(options: FayeOptions) -> SocketAddr {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    faye_testkit::server::serve(FayeService::new(server, options)).await
}

fn deflate_on() -> FayeOptions {
    FayeOptions::default().websocket_deflate(true)
}

/// A WebSocket client that inflates what the server compresses.
struct Client {
    ws: RawWs,
    /// The handshake reply's status and headers.
    head: Response,
    /// The window the server agreed to compress within.
    window_bits: u8,
}

impl Client {
    /// Opens a WebSocket, offering `extensions` if given.
    async fn connect(addr: SocketAddr, extensions: Option<&str>) -> Self {
        let offer: Vec<_> =
            extensions.map(|e| ("Sec-WebSocket-Extensions", e)).into_iter().collect();
        let (head, ws) =
            within(QUICK, "the upgrade", RawWs::connect(addr, "/bayeux", &offer)).await.unwrap();
        Self { ws, head, window_bits: 15 }
    }

    /// A client that agreed a server window of only 2^`bits` bytes, and inflates
    /// with exactly that window.
    async fn with_window(addr: SocketAddr, bits: u8) -> Self {
        let offer = format!("permessage-deflate; server_max_window_bits={bits}");
        let mut client = Self::connect(addr, Some(&offer)).await;
        assert_eq!(client.extensions(), Some(&*format!("{AGREED}; server_max_window_bits={bits}")));
        client.window_bits = bits;
        client
    }

    fn status(&self) -> u16 {
        self.head.status
    }

    fn extensions(&self) -> Option<&str> {
        self.head.header("sec-websocket-extensions")
    }

    /// Sends one (masked) frame.
    async fn send(&mut self, is_final: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
        self.ws.send(frame(is_final, rsv1, opcode, payload.to_vec())).await.unwrap();
    }

    /// Reads one frame.
    async fn read_frame(&mut self) -> Frame {
        let frame = timeout(Duration::from_secs(5), self.ws.read_frame())
            .await
            .expect("a frame within 5 s");
        let frame = frame.unwrap();
        assert_eq!(frame.header().mask, None, "the server masks nothing");
        frame
    }

    /// The next text message as JSON, inflated if compressed; with whether it was.
    async fn read_json(&mut self) -> (Value, bool) {
        let frame = self.read_frame().await;
        let header = frame.header();
        assert_eq!((header.opcode, header.is_final), (TEXT, true), "{frame:?}");
        let rsv1 = header.rsv1;
        let text = if rsv1 { self.inflate(frame.payload()) } else { frame.into_payload().to_vec() };
        (serde_json::from_slice(&text).unwrap(), rsv1)
    }

    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        // Agreed: server_no_context_takeover, so each message stands alone.
        let mut inflater = Decompress::new_with_window_bits(false, self.window_bits);
        let mut input = payload.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::with_capacity(64 * 1024);
        inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(inflater.total_in(), input.len() as u64);
        out
    }

    /// Reads until a close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.read_frame().await;
            if frame.header().opcode == OpCode::Control(Control::Close) {
                return u16::from_be_bytes([frame.payload()[0], frame.payload()[1]]);
            }
        }
    }
}

/// Compresses `text` as one message with `c` (sync flush, trailer stripped).
fn deflate(c: &mut Compress, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TRAILER));
    out.truncate(out.len() - TRAILER.len());
    out
}

fn assert_handshake_reply(reply: &Value) -> String {
    assert_eq!(reply[0]["channel"], "/meta/handshake", "{reply}");
    assert_eq!(reply[0]["successful"], true, "{reply}");
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn negotiates_and_compresses_both_ways() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(ws.status(), 101);
    assert_eq!(ws.extensions(), Some(AGREED));

    let mut c = Compress::new(Compression::default(), false);
    let z = deflate(&mut c, HANDSHAKE.as_bytes());
    ws.send(true, true, TEXT, &z).await; // FIN, RSV1, text
    let frame = ws.read_frame().await;
    let header = frame.header();
    assert!(header.rsv1 && header.is_final && header.opcode == TEXT, "{frame:?}");
    let reply: Value = serde_json::from_slice(&ws.inflate(frame.payload())).unwrap();
    let id = assert_handshake_reply(&reply);

    // Subscribe and connect (compressed; the connect is held), then publish
    // uncompressed, which the client may still do: the delivery comes back
    // compressed.
    let subscribe =
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/news"}]);
    ws.send(true, true, TEXT, &deflate(&mut c, subscribe.to_string().as_bytes())).await;
    let (reply, _) = ws.read_json().await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}]);
    ws.send(true, true, TEXT, &deflate(&mut c, connect.to_string().as_bytes())).await;
    let data = "the same words over and over ".repeat(40);
    let publish = json!([{"channel": "/news", "clientId": id, "data": data, "id": "p"}]);
    ws.send(true, false, TEXT, publish.to_string().as_bytes()).await;
    let mut delivered = None;
    for _ in 0..4 {
        let (message, compressed) = ws.read_json().await;
        if let Some(delivery) = message.as_array().unwrap().iter().find(|m| m.get("data").is_some())
        {
            delivered = Some((delivery.clone(), compressed));
            break;
        }
    }
    let (delivery, compressed) = delivered.expect("the delivery");
    assert_eq!(
        (delivery["channel"].as_str(), delivery["data"].as_str()),
        (Some("/news"), Some(&*data))
    );
    assert!(compressed, "a 1 KiB delivery is compressed");
}

#[tokio::test]
async fn an_offer_for_a_smaller_server_window_is_declined() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate; server_max_window_bits=8")).await;
    assert_eq!(ws.status(), 101);
    assert_eq!(ws.extensions(), None);
    ws.send(true, false, TEXT, HANDSHAKE.as_bytes()).await;
    let (reply, compressed) = ws.read_json().await;
    assert_handshake_reply(&reply);
    assert!(!compressed);
    // Not negotiated: a frame with RSV1 set is refused.
    let z = deflate(&mut Compress::new(Compression::default(), false), HANDSHAKE.as_bytes());
    ws.send(true, true, TEXT, &z).await;
    let close = ws.read_frame().await;
    assert_eq!((u8::from(close.header().opcode), close.payload().len()), (8, 0));
}

#[tokio::test]
async fn a_later_offer_may_be_accepted() {
    let addr = start(deflate_on()).await;
    let offer = "permessage-deflate; server_max_window_bits=8, permessage-deflate; \
                 client_no_context_takeover; client_max_window_bits";
    let mut ws = Client::connect(addr, Some(offer)).await;
    assert_eq!(
        ws.extensions(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // Each message compressed on its own, as promised.
    for _ in 0..2 {
        let mut c = Compress::new(Compression::default(), false);
        ws.send(true, true, TEXT, &deflate(&mut c, HANDSHAKE.as_bytes())).await;
        let (reply, compressed) = ws.read_json().await;
        assert_handshake_reply(&reply);
        assert!(compressed);
    }
}

#[tokio::test]
async fn off_by_default_even_when_offered() {
    let addr = start(FayeOptions::default()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(ws.status(), 101);
    assert_eq!(ws.extensions(), None);
    ws.send(true, false, TEXT, HANDSHAKE.as_bytes()).await;
    let (reply, compressed) = ws.read_json().await;
    assert_handshake_reply(&reply);
    assert!(!compressed);
}

#[tokio::test]
async fn no_offer_no_extension() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, None).await;
    assert_eq!(ws.extensions(), None);
    ws.send(true, false, TEXT, HANDSHAKE.as_bytes()).await;
    let (reply, compressed) = ws.read_json().await;
    assert_handshake_reply(&reply);
    assert!(!compressed);
}

#[tokio::test]
async fn a_decompression_bomb_closes_with_1009() {
    let addr = start(deflate_on().max_request_bytes(1024)).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    assert_eq!(ws.extensions(), Some(AGREED));
    // 1 MiB of spaces inside a JSON string: a few hundred bytes compressed.
    let bomb = format!(r#"[{{"channel":"/x","data":"{}"}}]"#, " ".repeat(1 << 20));
    let z = deflate(&mut Compress::new(Compression::best(), false), bomb.as_bytes());
    assert!(z.len() < 2048, "{}", z.len());
    ws.send(true, true, TEXT, &z).await;
    assert_eq!(ws.close_code().await, 1009);
}

#[tokio::test]
async fn a_compressed_message_over_the_limit_closes_with_1009() {
    let addr = start(deflate_on().max_request_bytes(1024)).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    // Incompressible, so larger than the limit compressed too.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: String = (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x >> 58) as u8)
        })
        .collect();
    let z = deflate(&mut Compress::new(Compression::default(), false), noise.as_bytes());
    assert!(z.len() > 1024 + 1024 / 1024 + 64, "{}", z.len());
    ws.send(true, true, TEXT, &z).await;
    assert_eq!(ws.close_code().await, 1009);
}

#[tokio::test]
async fn a_message_just_under_the_limit_is_accepted() {
    let addr = start(deflate_on().max_request_bytes(1024)).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    let padded = format!("{HANDSHAKE}{}", " ".repeat(1024 - HANDSHAKE.len()));
    let z = deflate(&mut Compress::new(Compression::default(), false), padded.as_bytes());
    ws.send(true, true, TEXT, &z).await;
    let (reply, _) = ws.read_json().await;
    assert_handshake_reply(&reply);
}

#[tokio::test]
async fn a_fragmented_compressed_message_with_a_ping_between() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    let z = deflate(&mut Compress::new(Compression::default(), false), HANDSHAKE.as_bytes());
    let (a, rest) = z.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send(false, true, TEXT, a).await; // RSV1, text, not final
    ws.send(false, false, CONTINUATION, b).await; // continuation
    ws.send(true, false, PING, b"ping").await;
    ws.send(true, false, CONTINUATION, c).await; // final continuation
    let pong = ws.read_frame().await;
    assert_eq!((u8::from(pong.header().opcode), pong.payload()), (0xa, &b"ping"[..]));
    let (reply, _) = ws.read_json().await;
    assert_handshake_reply(&reply);
}

#[tokio::test]
async fn context_takeover_across_messages() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate; client_max_window_bits")).await;
    let mut c = Compress::new(Compression::default(), false);
    let first = deflate(&mut c, HANDSHAKE.as_bytes());
    let second = deflate(&mut c, HANDSHAKE.as_bytes());
    assert!(second.len() < first.len() / 3, "the second refers back to the first");
    ws.send(true, true, TEXT, &first).await;
    let one = assert_handshake_reply(&ws.read_json().await.0);
    ws.send(true, true, TEXT, &second).await;
    let two = assert_handshake_reply(&ws.read_json().await.0);
    assert_ne!(one, two);
}

#[tokio::test]
async fn invalid_compressed_data_closes_the_socket() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    ws.send(true, true, TEXT, b"\xff\xff\xff\xff").await;
    let read = timeout(Duration::from_secs(5), ws.ws.read_to_end()).await;
    assert!(read.is_ok(), "the server hangs up");
    let rest = read.unwrap().unwrap();
    // As for any frame tungstenite refuses: a close frame without a code.
    assert_eq!(rest, [0x88, 0x00]);
}

/// Subscribes `client` to `channel` and holds a connect on its socket, uncompressed.
async fn subscribe(client: &mut Client, channel: &str) {
    client.send(true, false, TEXT, HANDSHAKE.as_bytes()).await;
    let (reply, _) = client.read_json().await;
    let id = assert_handshake_reply(&reply);
    let subscribe =
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": channel}]);
    client.send(true, false, TEXT, subscribe.to_string().as_bytes()).await;
    let (reply, _) = client.read_json().await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}]);
    client.send(true, false, TEXT, connect.to_string().as_bytes()).await;
}

/// One published message pushed to many sockets is compressed once and the same
/// bytes go to all of them; a socket that agreed a smaller window compresses its
/// own copy. (The test's runtime has one thread, the server's tasks included, so
/// the count of compressions on this thread is the server's.)
#[tokio::test]
async fn a_push_shared_by_many_sockets_is_compressed_once() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let addr = faye_testkit::server::serve(FayeService::new(server.clone(), deflate_on())).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(addr, Some("permessage-deflate")).await;
        assert_eq!(client.extensions(), Some(AGREED));
        subscribe(&mut client, "/news").await;
        clients.push(client);
    }
    let mut small = Client::with_window(addr, 10).await;
    subscribe(&mut small, "/news").await;

    let before = faye_http::deflate::compressions_on_this_thread();
    let data = "the same words over and over ".repeat(100);
    server.client().await.unwrap().publish("/news", &data).await.unwrap();
    let mut payloads = Vec::new();
    for client in clients.iter_mut().chain([&mut small]) {
        let frame = client.read_frame().await;
        assert!(frame.header().rsv1, "a 3 KiB delivery is compressed: {frame:?}");
        let delivered: Value = serde_json::from_slice(&client.inflate(frame.payload())).unwrap();
        assert_eq!(delivered, json!([{"channel": "/news", "data": data}]));
        payloads.push(frame.into_payload());
    }
    assert_eq!(faye_http::deflate::compressions_on_this_thread() - before, 2);
    assert!(
        payloads[..3].iter().all(|p| *p == payloads[0]),
        "the shared sockets got the same bytes"
    );
}
