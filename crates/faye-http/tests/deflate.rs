//! WebSocket `permessage-deflate` (RFC 7692) over a real socket, with a client
//! written by hand: the handshake's negotiation, compressed frames both ways, the
//! size limit on inflated messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const HANDSHAKE: &str =
    r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]"#;
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// What the server answers a `permessage-deflate` offer it accepts.
const AGREED: &str = "permessage-deflate; server_no_context_takeover";

async fn start(options: FayeOptions) -> SocketAddr {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let faye = FayeService::new(server, options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(faye_http::serve(listener, faye, std::future::pending()));
    addr
}

fn deflate_on() -> FayeOptions {
    FayeOptions::default().websocket_deflate(true)
}

/// A frame from the server.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A hand-written WebSocket client.
struct Client {
    stream: TcpStream,
    /// The handshake reply's status and headers (names lowercase).
    status: u16,
    headers: HashMap<String, String>,
    /// Inflates the server's compressed messages (each on its own, as agreed).
    inflater: Decompress,
}

impl Client {
    /// Opens a WebSocket, offering `extensions` if given.
    async fn connect(addr: SocketAddr, extensions: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "GET /bayeux HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(extensions) = extensions {
            req.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        // Byte by byte, so that no frame is read with the head.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = timeout(Duration::from_secs(5), stream.read_u8()).await.unwrap().unwrap();
            head.push(byte);
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Self { stream, status, headers, inflater: Decompress::new(false) }
    }

    fn extensions(&self) -> Option<&str> {
        self.headers.get("sec-websocket-extensions").map(String::as_str)
    }

    /// Sends one masked frame; `first` is the first header byte (FIN, RSV, opcode).
    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads one frame (the server does not mask).
    async fn read_frame(&mut self) -> Frame {
        timeout(Duration::from_secs(5), async {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.unwrap();
            assert_eq!(head[1] & 0x80, 0, "the server masks nothing");
            let len = match head[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await.unwrap();
            Frame {
                fin: head[0] & 0x80 != 0,
                rsv1: head[0] & 0x40 != 0,
                opcode: head[0] & 0x0f,
                payload,
            }
        })
        .await
        .expect("a frame within 5 s")
    }

    /// The next text message as JSON, inflated if compressed; with whether it was.
    async fn read_json(&mut self) -> (Value, bool) {
        let frame = self.read_frame().await;
        assert_eq!((frame.opcode, frame.fin), (1, true), "{frame:?}");
        let text = if frame.rsv1 { self.inflate(&frame.payload) } else { frame.payload };
        (serde_json::from_slice(&text).unwrap(), frame.rsv1)
    }

    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        // Agreed: server_no_context_takeover, so each message stands alone.
        self.inflater.reset(false);
        let mut input = payload.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::with_capacity(64 * 1024);
        self.inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(self.inflater.total_in(), input.len() as u64);
        out
    }

    /// Reads until a close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.read_frame().await;
            if frame.opcode == 8 {
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
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
    assert_eq!(ws.status, 101);
    assert_eq!(ws.extensions(), Some(AGREED));

    let mut c = Compress::new(Compression::default(), false);
    let z = deflate(&mut c, HANDSHAKE.as_bytes());
    ws.send_frame(0xc1, &z).await; // FIN, RSV1, text
    let frame = ws.read_frame().await;
    assert!(frame.rsv1 && frame.fin && frame.opcode == 1, "{frame:?}");
    let reply: Value = serde_json::from_slice(&ws.inflate(&frame.payload)).unwrap();
    let id = assert_handshake_reply(&reply);

    // Subscribe and connect (compressed; the connect is held), then publish
    // uncompressed, which the client may still do: the delivery comes back
    // compressed.
    let subscribe =
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/news"}]);
    ws.send_frame(0xc1, &deflate(&mut c, subscribe.to_string().as_bytes())).await;
    let (reply, _) = ws.read_json().await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}]);
    ws.send_frame(0xc1, &deflate(&mut c, connect.to_string().as_bytes())).await;
    let data = "the same words over and over ".repeat(40);
    let publish = json!([{"channel": "/news", "clientId": id, "data": data, "id": "p"}]);
    ws.send_frame(0x81, publish.to_string().as_bytes()).await;
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
    assert_eq!(ws.status, 101);
    assert_eq!(ws.extensions(), None);
    ws.send_frame(0x81, HANDSHAKE.as_bytes()).await;
    let (reply, compressed) = ws.read_json().await;
    assert_handshake_reply(&reply);
    assert!(!compressed);
    // Not negotiated: a frame with RSV1 set is refused.
    let z = deflate(&mut Compress::new(Compression::default(), false), HANDSHAKE.as_bytes());
    ws.send_frame(0xc1, &z).await;
    let close = ws.read_frame().await;
    assert_eq!((close.opcode, close.payload.len()), (8, 0));
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
        ws.send_frame(0xc1, &deflate(&mut c, HANDSHAKE.as_bytes())).await;
        let (reply, compressed) = ws.read_json().await;
        assert_handshake_reply(&reply);
        assert!(compressed);
    }
}

#[tokio::test]
async fn off_by_default_even_when_offered() {
    let addr = start(FayeOptions::default()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(ws.status, 101);
    assert_eq!(ws.extensions(), None);
    ws.send_frame(0x81, HANDSHAKE.as_bytes()).await;
    let (reply, compressed) = ws.read_json().await;
    assert_handshake_reply(&reply);
    assert!(!compressed);
}

#[tokio::test]
async fn no_offer_no_extension() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, None).await;
    assert_eq!(ws.extensions(), None);
    ws.send_frame(0x81, HANDSHAKE.as_bytes()).await;
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
    ws.send_frame(0xc1, &z).await;
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
    ws.send_frame(0xc1, &z).await;
    assert_eq!(ws.close_code().await, 1009);
}

#[tokio::test]
async fn a_message_just_under_the_limit_is_accepted() {
    let addr = start(deflate_on().max_request_bytes(1024)).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    let padded = format!("{HANDSHAKE}{}", " ".repeat(1024 - HANDSHAKE.len()));
    let z = deflate(&mut Compress::new(Compression::default(), false), padded.as_bytes());
    ws.send_frame(0xc1, &z).await;
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
    ws.send_frame(0x41, a).await; // RSV1, text, not final
    ws.send_frame(0x00, b).await; // continuation
    ws.send_frame(0x89, b"ping").await;
    ws.send_frame(0x80, c).await; // final continuation
    let pong = ws.read_frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xa, &b"ping"[..]));
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
    ws.send_frame(0xc1, &first).await;
    let one = assert_handshake_reply(&ws.read_json().await.0);
    ws.send_frame(0xc1, &second).await;
    let two = assert_handshake_reply(&ws.read_json().await.0);
    assert_ne!(one, two);
}

#[tokio::test]
async fn invalid_compressed_data_closes_the_socket() {
    let addr = start(deflate_on()).await;
    let mut ws = Client::connect(addr, Some("permessage-deflate")).await;
    ws.send_frame(0xc1, b"\xff\xff\xff\xff").await;
    let mut rest = Vec::new();
    let read = timeout(Duration::from_secs(5), ws.stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server hangs up");
    // As for any frame tungstenite refuses: a close frame without a code.
    assert_eq!(rest, [0x88, 0x00]);
}
