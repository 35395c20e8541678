//! WebSocket `permessage-deflate` (RFC 7692), which tungstenite lacks: the offer is
//! negotiated in [`negotiate`], client messages are inflated by [`DeflateIo`] (an IO
//! adapter between the upgraded connection and tungstenite) and server text
//! messages are deflated by [`compress`].
//!
//! What is agreed: `permessage-deflate; server_no_context_takeover`, plus
//! `client_no_context_takeover` when the client offered it. The server always
//! compresses each message on its own (RFC 7692 §7.1.1.1 lets it say so unasked):
//! a compressor is ~320 KB, far more than an idle socket's few KiB, so instead of
//! one per socket there is one per thread, reset before each message. Offers the
//! server cannot honour are declined: `server_max_window_bits` below 15 (the
//! pure-Rust backend always compresses with a 32 KiB window), unknown or repeated
//! parameters, invalid values.
//!
//! Memory: messages are inflated by a per-thread inflater too (~43 KB), reset
//! before each message. A client compressing with context takeover (browsers do)
//! may refer back to the last 32 KiB of what it sent, so its socket keeps that
//! window: the last 32 KiB of its inflated messages, or less while it has sent
//! less. Before each of its messages the inflater is primed with the window, fed
//! as a stored (uncompressed) deflate block, which leaves it exactly as an
//! inflater kept for the socket would be, for a copy of at most 32 KiB. A client
//! that offered `client_no_context_takeover` has no window. While a message
//! arrives, its compressed bytes and then its inflated bytes are buffered (each
//! bounded by the size limit) and freed once tungstenite has it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderMap;
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a successful negotiation agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The client promised to compress each message on its own.
    pub(crate) client_no_context_takeover: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the handshake reply.
    ///
    /// `client_max_window_bits` is never echoed: it is optional in a response, and a
    /// 32 KiB inflater reads any window the client picks.
    pub(crate) fn response(self) -> &'static str {
        if self.client_no_context_takeover {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        } else {
            "permessage-deflate; server_no_context_takeover"
        }
    }
}

/// The first `permessage-deflate` offer in the request's `Sec-WebSocket-Extensions`
/// that the server can honour, if any.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Agreed> {
    let mut joined = String::new();
    for value in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        // A header that is not visible ASCII offers nothing we can read.
        let value = value.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    parse_offers(&joined)?
        .into_iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case("permessage-deflate"))
        .find_map(|offer| accept(&offer.params))
}

/// One extension offer: its name and `;` parameters (values unquoted).
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<&'a str>)>,
}

/// Parses RFC 6455's `Sec-WebSocket-Extensions` grammar: comma-separated
/// `token *(";" token ["=" (token / quoted-string)])`, empty list elements allowed.
/// `None` when the header does not follow it.
fn parse_offers(header: &str) -> Option<Vec<Offer<'_>>> {
    let mut p = Parser { s: header, i: 0 };
    let mut offers = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        if p.done() {
            return Some(offers);
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if !p.eat(b';') {
                break;
            }
            p.skip_ws();
            let key = p.token()?;
            p.skip_ws();
            let value = if p.eat(b'=') {
                p.skip_ws();
                Some(if p.peek() == Some(b'"') { p.quoted()? } else { p.token()? })
            } else {
                None
            };
            params.push((key, value));
        }
        offers.push(Offer { name, params });
        p.skip_ws();
        if !p.done() && !p.eat(b',') {
            return None;
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A quoted-string's content. Escapes are kept as they are: no value this
    /// module accepts contains one.
    fn quoted(&mut self) -> Option<&'a str> {
        let start = self.i + 1;
        let mut i = start;
        let bytes = self.s.as_bytes();
        loop {
            match bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        self.i = i + 1;
        self.s.get(start..i)
    }
}

/// RFC 7230's `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 7692's window bits value: `8`..`15`, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 || !value.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Whether the server can honour one `permessage-deflate` offer (RFC 7692 §7.1).
fn accept(params: &[(&str, Option<&str>)]) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut agreed = Agreed { client_no_context_takeover: false };
    for &(key, value) in params {
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                // Granted anyway: every server message is compressed on its own.
                value.is_none().then_some(0)?
            }
            "client_no_context_takeover" => {
                agreed.client_no_context_takeover = true;
                value.is_none().then_some(1)?
            }
            // A smaller window than the backend's 15 bits cannot be promised.
            "server_max_window_bits" => (window_bits(value?)? == 15).then_some(2)?,
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(agreed)
}

/// Server text messages this short are sent as they are: a lone small message
/// barely shrinks without shared context, and resetting and running the compressor
/// costs some 15 µs.
const MIN_COMPRESS_LEN: usize = 128;

/// The trailer RFC 7692 strips from every compressed message (an empty stored block).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// This thread's compressor (~320 KB), created on first use.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// This thread's inflater (~43 KB), created on first use.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A server message's payload compressed for a frame with RSV1 set, or `None`
/// when it is short or would not shrink (it is then sent uncompressed, which
/// RFC 7692 allows message by message).
///
/// Level 1: Bayeux JSON is repetitive and level 1 already finds most of it; the
/// server compresses each message once per receiving socket, so speed counts
/// more than the last few percent.
pub(crate) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < MIN_COMPRESS_LEN {
        return None;
    }
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = slot.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        // No context takeover: each message starts afresh.
        c.reset();
        // Room for a result one byte shorter than the payload, plus the trailer.
        let mut out = Vec::with_capacity(payload.len() + TRAILER.len() - 1);
        let mut consumed = 0;
        loop {
            let (in_before, out_before) = (c.total_in(), out.len());
            c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync).ok()?;
            let used = usize::try_from(c.total_in() - in_before).ok()?;
            consumed += used;
            if out.len() == out.capacity() || (used == 0 && out.len() == out_before) {
                return None;
            }
            if consumed == payload.len() {
                break;
            }
        }
        // A sync flush ends with the trailer.
        if !out.ends_with(&TRAILER) {
            return None;
        }
        out.truncate(out.len() - TRAILER.len());
        Some(out)
    })
}

/// The most a client's deflate stream refers back (RFC 7692's largest window).
const WINDOW: usize = 1 << 15;

/// What [`inflate`] made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inflated {
    /// All of it, within the limit.
    Fits,
    /// All of it, within the limit, and the client ended its deflate stream
    /// (BFINAL): what follows starts a new one, with nothing to refer back to.
    Ended,
    /// More than the limit.
    TooBig,
}

/// Inflates `data` with `d` into `out` after its first `out.len()` bytes, at most
/// `limit` bytes of it.
fn inflate(
    d: &mut Decompress,
    data: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Inflated> {
    let base = out.len();
    // One byte more than the limit tells "too big" from "exactly the limit".
    let cap = base.saturating_add(limit).saturating_add(1);
    let mut consumed = 0;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= cap {
                return Ok(Inflated::TooBig);
            }
            let grow = out.capacity().max(1024).min(cap - out.len());
            out.reserve_exact(grow);
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(&data[consumed..], out, FlushDecompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let used = usize::try_from(d.total_in() - in_before).unwrap_or(usize::MAX);
        consumed = consumed.saturating_add(used).min(data.len());
        if status == Status::StreamEnd {
            return Ok(if out.len() - base <= limit { Inflated::Ended } else { Inflated::TooBig });
        }
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
        if used == 0 && out.len() == out_before && out.len() < out.capacity() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated compressed message"));
        }
    }
    Ok(if out.len() - base <= limit { Inflated::Fits } else { Inflated::TooBig })
}

/// Primes a fresh inflater with `window` (at most [`WINDOW`] bytes) as if it had
/// inflated it: a non-final stored block holding it, whose output lands in `out`.
fn prime(d: &mut Decompress, window: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = u16::try_from(window.len()).unwrap_or(u16::MAX);
    let [lo, hi] = len.to_le_bytes();
    // BFINAL 0, BTYPE 00 (stored), padding; LEN and its complement, little-endian.
    let head = [0x00, lo, hi, !lo, !hi];
    let base = out.len();
    for part in [&head[..], &window[..usize::from(len)]] {
        if inflate(d, part, out, WINDOW)? != Inflated::Fits {
            return Err(io::Error::other("priming the inflater failed"));
        }
    }
    debug_assert_eq!(out.len() - base, usize::from(len));
    Ok(())
}

/// Room kept before an inflated payload for its frame header (the longest,
/// masked: 2 + 8 + 4 bytes).
const HEAD_ROOM: usize = 14;

/// A frame header as the client sent it.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3.
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes the header takes.
    size: usize,
}

/// The frame header at the start of `b`, or `None` if it is not all there.
fn parse_header(b: &[u8]) -> Option<Header> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (len, mut size) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key = b.get(size..size + 4)?.try_into().ok()?;
        size += 4;
        Some(key)
    } else {
        None
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv23: b0 & 0x30 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
        size,
    })
}

/// Writes a final, masked frame header for `opcode` and `len` so that it ends at
/// `end` in `buf` (`end >= HEAD_ROOM`); returns where it starts. The mask key is
/// all zeros, so the payload needs no masking.
fn write_header(buf: &mut [u8], end: usize, opcode: u8, len: u64) -> usize {
    let mut h = [0u8; HEAD_ROOM];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = 0x80 | len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 0x80 | 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        h[1] = 0x80 | 127;
        h[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    // h[n..n + 4] is the zero mask key.
    let start = end - n - 4;
    buf[start..end].copy_from_slice(&h[..n + 4]);
    start
}

/// A frame of a compressed message whose payload is still arriving.
#[derive(Debug)]
struct Incoming {
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes already read (for the mask's phase).
    offset: usize,
    fin: bool,
}

/// A compressed message being collected.
#[derive(Debug)]
struct Collecting {
    opcode: u8,
    /// Its payload so far, unmasked, still compressed.
    data: Vec<u8>,
}

/// The upgraded connection as tungstenite should see it: compressed client
/// messages arrive inflated, as one unfragmented frame with RSV1 clear (masked with
/// an all-zero key); everything else (uncompressed messages, control frames, which
/// may come between a compressed message's fragments, and whatever is malformed,
/// for tungstenite to refuse) passes through as it is. Writes pass through.
///
/// A compressed message larger than the size limit once inflated, or whose
/// compressed payload is larger than the limit plus deflate's worst-case overhead,
/// is never inflated past the limit: tungstenite is handed a frame header claiming
/// one byte more than its limit, so it fails with a capacity error and the socket
/// is closed with 1009, as for an uncompressed message over the limit. Data that is
/// not valid deflate, or a data frame other than a continuation inside a compressed
/// message, fails the read: the socket is closed as for any frame tungstenite
/// refuses (a close frame without a code).
#[derive(Debug)]
pub(crate) struct DeflateIo<S> {
    inner: S,
    agreed: Agreed,
    /// The most bytes of one inflated message.
    limit: usize,
    /// With context takeover: the last [`WINDOW`] bytes of the client's inflated
    /// messages, which its next message may refer to.
    window: Vec<u8>,
    /// Bytes read from the connection and not yet handled.
    input: BytesMut,
    /// How many bytes of the current pass-through frame (header included) are
    /// still to be handed over as they are.
    pass: u64,
    incoming: Option<Incoming>,
    collecting: Option<Collecting>,
    /// An inflated frame being handed to tungstenite, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
    /// Once the connection ended (`Ok`) or failed: what later reads return, after
    /// `ready` has been handed over.
    end: Option<io::Result<()>>,
}

impl<S> DeflateIo<S> {
    /// Wraps `inner`; inflated messages may be at most `limit` bytes.
    pub(crate) fn new(inner: S, agreed: Agreed, limit: usize) -> Self {
        Self {
            inner,
            agreed,
            limit,
            window: Vec::new(),
            input: BytesMut::new(),
            pass: 0,
            incoming: None,
            collecting: None,
            ready: Vec::new(),
            ready_at: 0,
            end: None,
        }
    }

    /// The most compressed bytes accepted for one message: the limit plus zlib's
    /// worst-case expansion of incompressible data (`deflateBound`), with room.
    fn compressed_limit(&self) -> u64 {
        let limit = u64::try_from(self.limit).unwrap_or(u64::MAX);
        limit.saturating_add(limit / 1024).saturating_add(64)
    }

    fn fail(&mut self, why: &'static str) -> io::Error {
        self.end = Some(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Hands tungstenite a header announcing a frame one byte over its limit, so
    /// that it fails with a capacity error; reads fail after that.
    fn too_big(&mut self) -> io::Result<()> {
        self.collecting = None;
        self.incoming = None;
        let claimed = u64::try_from(self.limit).ok().and_then(|l| l.checked_add(1));
        let Some(claimed) = claimed.filter(|&c| c <= i64::MAX as u64) else {
            return Err(self.fail("compressed message too big"));
        };
        let mut head = vec![0; HEAD_ROOM];
        self.ready_at = write_header(&mut head, HEAD_ROOM, 0x1, claimed);
        self.ready = head;
        self.end = Some(Err(io::Error::new(io::ErrorKind::InvalidData, "message too big")));
        Ok(())
    }

    /// Acts on the frame header at the start of `input`.
    fn on_header(&mut self, h: Header) -> io::Result<()> {
        let data_opcode = h.opcode < 8;
        if self.collecting.is_some() {
            if !data_opcode {
                // A control frame between fragments: tungstenite handles it.
                self.pass = h.len.saturating_add(h.size as u64);
                return Ok(());
            }
            if h.opcode != 0 || h.rsv1 || h.rsv23 || h.mask.is_none() {
                return Err(self.fail("invalid frame inside a compressed message"));
            }
        } else if !(h.rsv1 && !h.rsv23 && matches!(h.opcode, 1 | 2) && h.mask.is_some()) {
            // Not the start of a compressed message: tungstenite's to judge.
            self.pass = h.len.saturating_add(h.size as u64);
            return Ok(());
        }
        let so_far = self.collecting.as_ref().map_or(0, |c| c.data.len() as u64);
        if so_far.saturating_add(h.len) > self.compressed_limit() {
            return self.too_big();
        }
        self.input.advance(h.size);
        let collecting = self
            .collecting
            .get_or_insert_with(|| Collecting { opcode: h.opcode, data: Vec::new() });
        if let Ok(len) = usize::try_from(h.len) {
            // Reserve for what is already here, not for what the header claims.
            collecting.data.reserve(len.min(self.input.len()));
        }
        let mask = h.mask.unwrap_or_default();
        self.incoming = Some(Incoming { remaining: h.len, mask, offset: 0, fin: h.fin });
        self.take_payload()
    }

    /// Moves buffered payload bytes of the current compressed frame into the
    /// message; at the end of its last frame, inflates it.
    fn take_payload(&mut self) -> io::Result<()> {
        let (Some(incoming), Some(collecting)) = (&mut self.incoming, &mut self.collecting) else {
            return Ok(());
        };
        let n = usize::try_from(incoming.remaining).unwrap_or(usize::MAX).min(self.input.len());
        let start = collecting.data.len();
        collecting.data.extend_from_slice(&self.input[..n]);
        for (i, byte) in collecting.data[start..].iter_mut().enumerate() {
            *byte ^= incoming.mask[(incoming.offset + i) & 3];
        }
        self.input.advance(n);
        incoming.offset = (incoming.offset + n) & 3;
        incoming.remaining -= n as u64;
        if incoming.remaining > 0 {
            return Ok(());
        }
        let fin = incoming.fin;
        self.incoming = None;
        if fin { self.finish() } else { Ok(()) }
    }

    /// Inflates the collected message into one frame for tungstenite.
    fn finish(&mut self) -> io::Result<()> {
        let Some(Collecting { opcode, mut data }) = self.collecting.take() else {
            return Ok(());
        };
        data.extend_from_slice(&TRAILER);
        let limit = self.limit;
        // out: room for the header, the window (priming output), the message.
        let start = HEAD_ROOM + self.window.len();
        let guess = data.len().saturating_mul(4).min(limit).saturating_add(start);
        let mut out = Vec::with_capacity(guess);
        out.resize(HEAD_ROOM, 0);
        let inflated = INFLATER.with_borrow_mut(|slot| {
            let d = slot.get_or_insert_with(|| Decompress::new(false));
            d.reset(false);
            if !self.window.is_empty() {
                prime(d, &self.window, &mut out)?;
            }
            inflate(d, &data, &mut out, limit)
        });
        let compressed = data.len() - TRAILER.len();
        drop(data);
        let ended = match inflated {
            Ok(Inflated::Fits) => false,
            Ok(Inflated::Ended) => true,
            Ok(Inflated::TooBig) => return self.too_big(),
            Err(e) => {
                self.end = Some(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        if !self.agreed.client_no_context_takeover {
            // The new window: the last WINDOW bytes of the old one and the message.
            let history = &out[HEAD_ROOM..];
            self.window = if ended {
                Vec::new()
            } else {
                history[history.len().saturating_sub(WINDOW)..].to_vec()
            };
        }
        let len = (out.len() - start) as u64;
        tracing::trace!(compressed, inflated = len, "inflated a WebSocket message");
        self.ready_at = write_header(&mut out, start, opcode, len);
        self.ready = out;
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // An inflated frame first.
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready = Vec::new();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = &this.end {
                return Poll::Ready(match end {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
            if !this.input.is_empty() {
                if this.pass > 0 {
                    let n = usize::try_from(this.pass)
                        .unwrap_or(usize::MAX)
                        .min(this.input.len())
                        .min(buf.remaining());
                    buf.put_slice(&this.input[..n]);
                    this.input.advance(n);
                    this.pass -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                if this.incoming.is_some() {
                    this.take_payload()?;
                    continue;
                }
                if let Some(h) = parse_header(&this.input) {
                    this.on_header(h)?;
                    continue;
                }
            } else if this.input.capacity() > 0 {
                // Nothing buffered: an idle socket keeps no buffer.
                this.input = BytesMut::new();
            }
            let mut chunk = [0u8; 4096];
            let mut chunk = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // The connection ended; what is buffered is a partial frame.
                this.end = Some(Ok(()));
                continue;
            }
            this.input.extend_from_slice(chunk.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::io::AsyncReadExt;

    fn offered(values: &[&str]) -> Option<Agreed> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(v).unwrap());
        }
        negotiate(&headers)
    }

    const TAKEOVER: Option<Agreed> = Some(Agreed { client_no_context_takeover: false });
    const NO_TAKEOVER: Option<Agreed> = Some(Agreed { client_no_context_takeover: true });

    #[test]
    fn parses_offers() {
        let offers =
            parse_offers(r#" a ; x=1;y ,, b;z="q,;" , permessage-deflate;client_max_window_bits"#)
                .unwrap();
        assert_eq!(
            offers,
            [
                Offer { name: "a", params: vec![("x", Some("1")), ("y", None)] },
                Offer { name: "b", params: vec![("z", Some("q,;"))] },
                Offer {
                    name: "permessage-deflate",
                    params: vec![("client_max_window_bits", None)]
                },
            ]
        );
        assert_eq!(parse_offers(""), Some(vec![]));
        for bad in ["a b", "a;", "a;=1", "a;x=", r#"a;x="1"#, "a;x=1=2", ";a"] {
            assert_eq!(parse_offers(bad), None, "{bad}");
        }
    }

    #[test]
    fn negotiates_what_it_can_honour() {
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["permessage-deflate"]), TAKEOVER);
        // Chromium's and the Node permessage-deflate client's offer.
        assert_eq!(offered(&["permessage-deflate; client_max_window_bits"]), TAKEOVER);
        assert_eq!(
            offered(&["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"]),
            TAKEOVER
        );
        assert_eq!(offered(&["permessage-deflate; server_max_window_bits=15"]), TAKEOVER);
        assert_eq!(offered(&[r#"permessage-deflate; server_max_window_bits="15""#]), TAKEOVER);
        assert_eq!(
            offered(&["permessage-deflate; client_no_context_takeover; client_max_window_bits"]),
            NO_TAKEOVER
        );
        assert_eq!(offered(&["x-webkit-deflate-frame, Permessage-Deflate"]), TAKEOVER);
        // Declined offers.
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits, x y",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offered(&[bad]), None, "{bad}");
        }
        // The first offer it can honour wins, across header lines too.
        assert_eq!(
            offered(&[
                "permessage-deflate; server_max_window_bits=10",
                "permessage-deflate; client_no_context_takeover, permessage-deflate",
            ]),
            NO_TAKEOVER
        );
    }

    #[test]
    fn responses() {
        assert_eq!(TAKEOVER.unwrap().response(), "permessage-deflate; server_no_context_takeover");
        assert_eq!(
            NO_TAKEOVER.unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    fn raw_inflate(data: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut input = data.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::new();
        assert_eq!(inflate(&mut d, &input, &mut out, 1 << 20).unwrap(), Inflated::Fits);
        out
    }

    #[test]
    fn compresses_each_message_on_its_own() {
        assert_eq!(compress(b"[]"), None, "short");
        let text = format!(r#"[{{"channel":"/a","data":"{}"}}]"#, "abc".repeat(100));
        let first = compress(text.as_bytes()).unwrap();
        assert!(first.len() < text.len() / 4, "{}", first.len());
        assert_eq!(raw_inflate(&first), text.as_bytes());
        // The same again: no reference to the first (the inflater is fresh).
        assert_eq!(compress(text.as_bytes()).unwrap(), first);
        // Incompressible: sent as it is.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let mut c = Compress::new(Compression::best(), false);
        let mut data = Vec::with_capacity(1 << 16);
        c.compress_vec(&[b'a'; 100_000], &mut data, FlushCompress::Sync).unwrap();
        let mut out = vec![0; HEAD_ROOM];
        let inflated = inflate(&mut Decompress::new(false), &data, &mut out, 1000).unwrap();
        assert_eq!(inflated, Inflated::TooBig);
        assert!(out.len() <= HEAD_ROOM + 1001, "{}", out.len());
        let mut out = Vec::new();
        let inflated = inflate(&mut Decompress::new(false), &data, &mut out, 100_000).unwrap();
        assert_eq!(inflated, Inflated::Fits);
        assert_eq!(out.len(), 100_000);
        let mut out = Vec::new();
        assert!(inflate(&mut Decompress::new(false), b"\xff\xff\xff", &mut out, 1000).is_err());
    }

    #[test]
    fn headers_round_trip() {
        for len in [0u64, 125, 126, 65_535, 65_536, 1 << 40] {
            let mut head = [0u8; HEAD_ROOM];
            let start = write_header(&mut head, HEAD_ROOM, 0x2, len);
            let h = parse_header(&head[start..]).unwrap();
            assert_eq!((h.fin, h.rsv1, h.rsv23, h.opcode), (true, false, false, 2));
            assert_eq!((h.len, h.mask, h.size), (len, Some([0; 4]), HEAD_ROOM - start));
        }
        assert!(parse_header(&[0x81]).is_none());
        assert!(parse_header(&[0x81, 0xfe, 0x00]).is_none());
        assert!(parse_header(&[0x81, 0x85, 1, 2, 3]).is_none());
    }

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65_536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    fn deflated(c: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
        out.truncate(out.len() - 4);
        out
    }

    /// Feeds `wire` through the adapter one byte at a time; returns what comes out.
    async fn through(wire: Vec<u8>, agreed: Agreed, limit: usize) -> (Vec<u8>, io::Result<()>) {
        through_in(1, wire, agreed, limit).await
    }

    /// Feeds `wire` through the adapter `chunk` bytes at a time.
    async fn through_in(
        chunk: usize,
        wire: Vec<u8>,
        agreed: Agreed,
        limit: usize,
    ) -> (Vec<u8>, io::Result<()>) {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in wire.chunks(chunk) {
                client.write_all(part).await.unwrap();
            }
        });
        let mut io = DeflateIo::new(server, agreed, limit);
        let mut out = Vec::new();
        let result = io.read_to_end(&mut out).await.map(drop);
        // After a failed read the writer may be stuck on a full pipe.
        writer.abort();
        (out, result)
    }

    #[tokio::test]
    async fn inflates_fragments_and_passes_control_frames() {
        let mut c = Compress::new(Compression::fast(), false);
        let text =
            br#"[{"channel":"/meta/connect","clientId":"abc","connectionType":"websocket"}]"#;
        let z = deflated(&mut c, text);
        let mut wire = frame(0x41, &z[..5], [1, 2, 3, 4]);
        wire.extend(frame(0x89, b"hi", [5, 6, 7, 8]));
        wire.extend(frame(0x80, &z[5..], [9, 10, 11, 12]));
        wire.extend(frame(0x81, b"plain", [1, 1, 1, 1]));
        let again = deflated(&mut c, text);
        assert!(again.len() < z.len() / 2, "context taken over");
        wire.extend(frame(0xc2, &again, [7, 7, 7, 7]));
        let (out, result) = through(wire, TAKEOVER.unwrap(), 1000).await;
        result.unwrap();
        let mut expected = frame(0x89, b"hi", [5, 6, 7, 8]);
        expected.extend(frame(0x81, text, [0; 4]));
        expected.extend(frame(0x81, b"plain", [1, 1, 1, 1]));
        expected.extend(frame(0x82, text, [0; 4]));
        assert_eq!(out, expected);
    }

    /// Text from a small vocabulary: repetitive, as JSON is, so that matches reach
    /// far back.
    fn words(x: &mut u64, len: usize) -> Vec<u8> {
        const VOCAB: [&str; 8] =
            ["channel", "clientId", "/meta/connect", "data", "42", "websocket", "id", "héllo"];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            out.extend_from_slice(VOCAB[(*x >> 61) as usize].as_bytes());
            out.push(if *x & 1 == 0 { b' ' } else { b',' });
        }
        out
    }

    #[tokio::test]
    async fn the_window_stands_in_for_a_kept_inflater() {
        // Sizes around and past the 32 KiB window, so that messages refer back
        // into earlier ones, across several, and past a truncated window.
        let sizes = [10, 300, 5000, 40_000, 20, 33_000, 700, 70_000, 1, 32_768, 900, 16_000];
        let mut x = 0x1234_5678_9abc_def1_u64;
        let texts: Vec<Vec<u8>> = sizes.iter().map(|&n| words(&mut x, n)).collect();
        for (level, chunk) in [(Compression::fast(), 4093), (Compression::best(), 65_536)] {
            let mut c = Compress::new(level, false);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, text) in texts.iter().enumerate() {
                let z = deflated(&mut c, text);
                let mask = [i as u8, 0x5a, 0xa5, 0x0f];
                if i % 3 == 2 {
                    // Fragmented, with a ping between.
                    let (a, b) = z.split_at(z.len() / 2);
                    wire.extend(frame(0x41, a, mask));
                    wire.extend(frame(0x89, b"", mask));
                    wire.extend(frame(0x80, b, mask));
                    expected.extend(frame(0x89, b"", mask));
                } else {
                    wire.extend(frame(0xc1, &z, mask));
                }
                expected.extend(frame(0x81, text, [0; 4]));
            }
            let (out, result) = through_in(chunk, wire, TAKEOVER.unwrap(), 1 << 20).await;
            result.unwrap();
            assert!(out == expected, "level {level:?}: the inflated frames differ");
        }
    }

    #[tokio::test]
    async fn a_bomb_becomes_an_oversize_header() {
        let mut c = Compress::new(Compression::best(), false);
        let z = deflated(&mut c, &[b' '; 50_000]);
        let (out, result) = through(frame(0xc1, &z, [1, 2, 3, 4]), TAKEOVER.unwrap(), 1024).await;
        let mut head = [0u8; HEAD_ROOM];
        let start = write_header(&mut head, HEAD_ROOM, 0x1, 1025);
        assert_eq!(out, &head[start..]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn invalid_data_fails_the_read() {
        let (out, result) =
            through(frame(0xc1, b"\xff\xff\xff\xff", [1, 2, 3, 4]), NO_TAKEOVER.unwrap(), 1024)
                .await;
        assert!(out.is_empty());
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
