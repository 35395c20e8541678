//! The sans-IO core of the read side: the bytes the peer sends in, what tungstenite
//! should read out, with every compressed message inflated into one plain frame.
//! The text below speaks of the server reading a client, the case it was written
//! for; [`Inflater::client`] reads a server the same way, with unmasked frames.
//! No I/O, no async: [`Inflater::feed`] takes bytes as they come, [`Inflater::poll`]
//! hands out [`Output`]s. The same bytes give the same outputs however they are
//! split.
//!
//! It reads untrusted frames before tungstenite does, so it is total (no input
//! panics it) and bounded: besides the bytes fed and not yet polled, it holds at
//! most one compressed message (the size limit plus deflate's worst-case overhead),
//! its inflated form (the size limit) and, with context takeover, the client's
//! last 32 KiB.
//!
//! Frame headers are read and written with tungstenite's own codec
//! ([`FrameHeader`]), so that this crate has no second one.
//!
//! Inflating uses one zlib inflater per thread (tens of KB with its window), reset before each
//! message. A client compressing with context takeover (browsers do) may refer
//! back to the last 32 KiB it sent, so its socket keeps that window, which
//! becomes the inflater's dictionary before each of its messages: the same
//! result as an inflater kept per socket, for a copy of at most 32 KiB.

use std::cell::RefCell;
use std::fmt;
use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::{Role, TRAILER};

/// The most a client's deflate stream refers back (RFC 7692's largest window).
const WINDOW: usize = 1 << 15;

thread_local! {
    /// This thread's inflater, created on first use.
    static DECOMPRESS: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// What the WebSocket layer should read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Client bytes handed on as they came: frames that do not start or continue
    /// a compressed message (uncompressed messages, control frames, which may come
    /// between a compressed message's fragments), and whatever is malformed, for
    /// tungstenite to refuse. A frame may come in several pieces.
    Pass(Bytes),
    /// A compressed message, inflated.
    Message(Message),
    /// A compressed message over the size limit, compressed or inflated. What the
    /// WebSocket layer reads for it is a frame header one byte over its limit, so
    /// that it fails as for an uncompressed message over the limit (1009);
    /// [`Inflater::poll`] fails with [`Error::TooBig`] from then on.
    TooBig,
}

/// An inflated message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// [`Data::Text`] or [`Data::Binary`].
    pub opcode: Data,
    /// The inflated payload, at most the size limit.
    pub payload: Bytes,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("opcode", &self.opcode)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

/// Why the client's bytes cannot be read on; the socket should be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A data frame other than a continuation, or a continuation with RSV bits
    /// set or unmasked, between the fragments of a compressed message.
    InvalidFragment,
    /// A compressed message that is not valid deflate, or ends mid-block.
    InvalidDeflate,
    /// A compressed message over the size limit ([`Output::TooBig`] came first).
    TooBig,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidFragment => "invalid frame inside a compressed message",
            Self::InvalidDeflate => "invalid compressed message",
            Self::TooBig => "compressed message too big",
        })
    }
}

impl std::error::Error for Error {}

impl Output {
    /// The bytes the WebSocket layer reads for this output, in order: a frame
    /// header and a payload (either may be empty). An inflated message is one final
    /// frame with RSV1 clear; read by a server (`role`), masked (as a client's frame
    /// must be) with an all-zero key, so that its payload needs no masking.
    pub fn into_wire(self, limit: usize, role: Role) -> [Bytes; 2] {
        match self {
            Self::Pass(bytes) => [bytes, Bytes::new()],
            Self::Message(Message { opcode, payload }) => {
                [header(OpCode::Data(opcode), payload.len() as u64, role), payload]
            }
            // limit + 1 <= i64::MAX: checked before TooBig is handed out.
            Self::TooBig => {
                [header(OpCode::Data(Data::Text), limit as u64 + 1, role), Bytes::new()]
            }
        }
    }
}

/// A final frame header: for a server to read, masked with an all-zero key.
fn header(opcode: OpCode, len: u64, role: Role) -> Bytes {
    let mask = (role == Role::Server).then_some([0; 4]);
    let header = FrameHeader { opcode, mask, ..FrameHeader::default() };
    let mut out = Vec::with_capacity(header.len(len));
    // Writing to a Vec cannot fail.
    let _ = header.format(len, &mut out);
    Bytes::from(out)
}

/// The reading half of a `permessage-deflate` connection.
#[derive(Debug)]
pub struct Inflater {
    /// Whose frames it reads: a server reads masked frames.
    role: Role,
    /// Each client message stands alone (`client_no_context_takeover`).
    no_context_takeover: bool,
    /// The most bytes of one inflated message.
    limit: usize,
    /// With context takeover: the last [`WINDOW`] bytes of the client's inflated
    /// messages, which its next message may refer to.
    window: Vec<u8>,
    /// Bytes fed and not yet handled.
    input: BytesMut,
    /// How many bytes of the current pass-through frame (header included) are
    /// still to be handed on as they are.
    pass: u64,
    /// The frame of a compressed message whose payload is arriving.
    incoming: Option<Incoming>,
    /// The compressed message being collected.
    collecting: Option<Collecting>,
    /// Once set, what every poll returns.
    failed: Option<Error>,
}

/// A frame of a compressed message whose payload is still arriving.
#[derive(Debug)]
struct Incoming {
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes already read, modulo 4 (the mask's phase).
    phase: usize,
    fin: bool,
}

/// A compressed message being collected.
#[derive(Debug)]
struct Collecting {
    opcode: Data,
    /// Its payload so far, unmasked, still compressed.
    data: Vec<u8>,
}

impl Inflater {
    /// The read side of a connection whose client compresses each message on its
    /// own if `no_context_takeover`; inflated messages may be at most `limit` bytes.
    pub fn new(no_context_takeover: bool, limit: usize) -> Self {
        Self::with_role(Role::Server, no_context_takeover, limit)
    }

    /// The read side of a client: the server's frames, unmasked, compressed each on
    /// its own if `no_context_takeover` (`server_no_context_takeover`).
    pub fn client(no_context_takeover: bool, limit: usize) -> Self {
        Self::with_role(Role::Client, no_context_takeover, limit)
    }

    fn with_role(role: Role, no_context_takeover: bool, limit: usize) -> Self {
        Self {
            role,
            no_context_takeover,
            limit,
            window: Vec::new(),
            input: BytesMut::new(),
            pass: 0,
            incoming: None,
            collecting: None,
            failed: None,
        }
    }

    /// The most bytes of one inflated message.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Which end reads with it.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Takes bytes read from the client. Poll until `Ok(None)` before feeding more
    /// to keep memory to the bytes of one read.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes held besides those fed and not yet handled: the compressed message
    /// being collected and the context window.
    pub fn held(&self) -> usize {
        self.collecting.as_ref().map_or(0, |c| c.data.capacity()) + self.window.capacity()
    }

    /// The most compressed bytes accepted for one message: the limit plus zlib's
    /// worst-case expansion of incompressible data (`deflateBound`), with room.
    pub fn compressed_limit(&self) -> u64 {
        let limit = u64::try_from(self.limit).unwrap_or(u64::MAX);
        limit.saturating_add(limit / 1024).saturating_add(64)
    }

    /// The next output, `Ok(None)` when it needs more bytes, or why it cannot go on
    /// (then always the same error).
    pub fn poll(&mut self) -> Result<Option<Output>, Error> {
        loop {
            if let Some(e) = self.failed {
                return Err(e);
            }
            if self.input.is_empty() {
                // An idle socket keeps no buffer.
                self.input = BytesMut::new();
                return Ok(None);
            }
            if self.pass > 0 {
                let n = usize::try_from(self.pass).unwrap_or(usize::MAX).min(self.input.len());
                self.pass -= n as u64;
                return Ok(Some(Output::Pass(self.input.split_to(n).freeze())));
            }
            if self.incoming.is_some() {
                if let Some(output) = self.take_payload()? {
                    return Ok(Some(output));
                }
                continue;
            }
            let mut cursor = Cursor::new(&self.input[..]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    let size = cursor.position() as usize;
                    if let Some(output) = self.on_header(&header, size, len)? {
                        return Ok(Some(output));
                    }
                }
                Ok(None) => return Ok(None),
                // A header tungstenite refuses (a reserved opcode): it is handed on,
                // with all that follows, for tungstenite to refuse the same way.
                Err(_) => self.pass = u64::MAX,
            }
        }
    }

    /// Fails with `e` from now on, dropping what is buffered.
    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e);
        self.input = BytesMut::new();
        self.incoming = None;
        self.collecting = None;
        self.window = Vec::new();
        e
    }

    /// A message over the limit: [`Output::TooBig`], then [`Error::TooBig`].
    fn too_big(&mut self) -> Result<Option<Output>, Error> {
        let e = self.fail(Error::TooBig);
        // A header claiming limit + 1 must be one tungstenite can read.
        if u64::try_from(self.limit).is_ok_and(|l| l < i64::MAX as u64) {
            Ok(Some(Output::TooBig))
        } else {
            Err(e)
        }
    }

    /// Acts on the frame header (`size` bytes, `len` of payload) at the start of
    /// the input.
    fn on_header(
        &mut self,
        h: &FrameHeader,
        size: usize,
        len: u64,
    ) -> Result<Option<Output>, Error> {
        // Clients mask their frames; servers do not.
        let masked_right = h.mask.is_some() == (self.role == Role::Server);
        let opcode = match (h.opcode, &self.collecting) {
            // A control frame between fragments: tungstenite's to handle.
            (OpCode::Control(_), Some(_)) => None,
            (OpCode::Data(Data::Continue), Some(c))
                if !h.rsv1 && !h.rsv2 && !h.rsv3 && masked_right =>
            {
                Some(c.opcode)
            }
            (_, Some(_)) => return Err(self.fail(Error::InvalidFragment)),
            (OpCode::Data(opcode @ (Data::Text | Data::Binary)), None)
                if h.rsv1 && !h.rsv2 && !h.rsv3 && masked_right =>
            {
                Some(opcode)
            }
            // Not the start of a compressed message: tungstenite's to judge.
            _ => None,
        };
        let Some(opcode) = opcode else {
            self.pass = len.saturating_add(size as u64);
            return Ok(None);
        };
        let so_far = self.collecting.as_ref().map_or(0, |c| c.data.len() as u64);
        if so_far.saturating_add(len) > self.compressed_limit() {
            return self.too_big();
        }
        self.input.advance(size);
        self.collecting.get_or_insert_with(|| Collecting { opcode, data: Vec::new() });
        let mask = h.mask.unwrap_or_default();
        self.incoming = Some(Incoming { remaining: len, mask, phase: 0, fin: h.is_final });
        // Now: an empty final frame ends the message with no input to wait for.
        self.take_payload()
    }

    /// Moves input of the current compressed frame into the message; at the end
    /// of its last frame, inflates it.
    fn take_payload(&mut self) -> Result<Option<Output>, Error> {
        let most = usize::try_from(self.compressed_limit()).unwrap_or(usize::MAX);
        let (Some(incoming), Some(collecting)) = (&mut self.incoming, &mut self.collecting) else {
            return Ok(None);
        };
        let n = usize::try_from(incoming.remaining).unwrap_or(usize::MAX).min(self.input.len());
        let start = collecting.data.len();
        // Grown for what is here, not for what headers claim, and never past the
        // compressed limit and the trailer.
        if start + n > collecting.data.capacity() {
            let most = most.saturating_add(TRAILER.len());
            let want = collecting.data.capacity().saturating_mul(2).min(most).max(start + n);
            collecting.data.reserve_exact(want - start);
        }
        collecting.data.extend_from_slice(&self.input[..n]);
        for (i, byte) in collecting.data[start..].iter_mut().enumerate() {
            *byte ^= incoming.mask[(incoming.phase + i) & 3];
        }
        self.input.advance(n);
        incoming.phase = (incoming.phase + n) & 3;
        incoming.remaining -= n as u64;
        if incoming.remaining > 0 {
            return Ok(None);
        }
        let fin = incoming.fin;
        self.incoming = None;
        if fin { self.finish() } else { Ok(None) }
    }

    /// Inflates the collected message.
    fn finish(&mut self) -> Result<Option<Output>, Error> {
        let Some(Collecting { opcode, mut data }) = self.collecting.take() else {
            return Ok(None);
        };
        data.extend_from_slice(&TRAILER);
        let limit = self.limit;
        let guess = data.len().saturating_mul(4).min(limit);
        let mut out = Vec::with_capacity(guess);
        let inflated = DECOMPRESS.with_borrow_mut(|slot| {
            let d = slot.get_or_insert_with(|| Decompress::new(false));
            d.reset(false);
            if !self.window.is_empty() && d.set_dictionary(&self.window).is_err() {
                return Err(Error::InvalidDeflate);
            }
            inflate(d, &data, &mut out, limit)
        });
        let compressed = data.len() - TRAILER.len();
        drop(data);
        let ended = match inflated {
            Ok(Inflated::Fits) => false,
            Ok(Inflated::Ended) => true,
            Ok(Inflated::TooBig) => return self.too_big(),
            Err(e) => return Err(self.fail(e)),
        };
        if !self.no_context_takeover {
            self.slide_window(&out, ended);
        }
        tracing::trace!(compressed, inflated = out.len(), "inflated a WebSocket message");
        Ok(Some(Output::Message(Message { opcode, payload: Bytes::from(out) })))
    }

    /// The window after `message`: the last [`WINDOW`] bytes of the old one and
    /// the message, or nothing once the client ended its deflate stream.
    fn slide_window(&mut self, message: &[u8], ended: bool) {
        if ended {
            self.window = Vec::new();
            return;
        }
        let keep = WINDOW.saturating_sub(message.len()).min(self.window.len());
        self.window.drain(..self.window.len() - keep);
        let add = message.len().min(WINDOW);
        // At most WINDOW bytes, ever.
        self.window.reserve_exact(add);
        self.window.extend_from_slice(&message[message.len().saturating_sub(WINDOW)..]);
    }
}

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
) -> Result<Inflated, Error> {
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
            .map_err(|_| Error::InvalidDeflate)?;
        let used = usize::try_from(d.total_in() - in_before).unwrap_or(usize::MAX);
        consumed = consumed.saturating_add(used).min(data.len());
        if status == Status::StreamEnd {
            return Ok(if out.len() - base <= limit { Inflated::Ended } else { Inflated::TooBig });
        }
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
        if used == 0 && out.len() == out_before && out.len() < out.capacity() {
            // Truncated: the trailer should have ended a block.
            return Err(Error::InvalidDeflate);
        }
    }
    Ok(if out.len() - base <= limit { Inflated::Fits } else { Inflated::TooBig })
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// A masked client frame; `first` is the first header byte (FIN, RSV, opcode).
    fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: OpCode::from(first & 0x0f),
            mask: Some(mask),
        };
        let mut f = Vec::new();
        header.format(payload.len() as u64, &mut f).unwrap();
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    /// `text` compressed as one message by `c` (sync flush, trailer stripped).
    fn deflated(c: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
        out.truncate(out.len() - TRAILER.len());
        out
    }

    fn text(payload: &[u8]) -> Output {
        Output::Message(Message { opcode: Data::Text, payload: Bytes::copy_from_slice(payload) })
    }

    /// Feeds `wire` `chunk` bytes at a time, polling after each; returns the
    /// outputs (consecutive `Pass`es joined) and how it ended.
    fn run(inflater: &mut Inflater, wire: &[u8], chunk: usize) -> (Vec<Output>, Result<(), Error>) {
        let mut outputs: Vec<Output> = Vec::new();
        let mut push = |output| match (outputs.last_mut(), output) {
            (Some(Output::Pass(joined)), Output::Pass(more)) => {
                *joined = [&joined[..], &more[..]].concat().into();
            }
            (_, output) => outputs.push(output),
        };
        for part in wire.chunks(chunk.max(1)) {
            inflater.feed(part);
            loop {
                match inflater.poll() {
                    Ok(Some(output)) => push(output),
                    Ok(None) => break,
                    Err(e) => return (outputs, Err(e)),
                }
            }
        }
        (outputs, Ok(()))
    }

    /// [`run`] with every chunk size from 1 to the whole, which must agree.
    fn through(
        no_context_takeover: bool,
        limit: usize,
        wire: &[u8],
    ) -> (Vec<Output>, Result<(), Error>) {
        let whole = run(&mut Inflater::new(no_context_takeover, limit), wire, wire.len());
        for chunk in [1, 2, 3, 7, 13, 64, 4096] {
            let split = run(&mut Inflater::new(no_context_takeover, limit), wire, chunk);
            assert_eq!(split, whole, "fed {chunk} bytes at a time");
        }
        whole
    }

    /// The bytes the WebSocket layer would read.
    fn wire_of(outputs: Vec<Output>, limit: usize) -> Vec<u8> {
        outputs.into_iter().flat_map(|o| o.into_wire(limit, Role::Server)).flatten().collect()
    }

    #[test]
    fn inflates_fragments_and_passes_control_frames() {
        let mut c = Compress::new(Compression::fast(), false);
        let json =
            br#"[{"channel":"/meta/connect","clientId":"abc","connectionType":"websocket"}]"#;
        let z = deflated(&mut c, json);
        let ping = frame(0x89, b"hi", [5, 6, 7, 8]);
        let plain = frame(0x81, b"plain", [1, 1, 1, 1]);
        let mut wire = frame(0x41, &z[..5], [1, 2, 3, 4]);
        wire.extend(&ping);
        wire.extend(frame(0x00, &z[5..9], [4, 3, 2, 1]));
        wire.extend(frame(0x80, &z[9..], [9, 10, 11, 12]));
        wire.extend(&plain);
        let again = deflated(&mut c, json);
        assert!(again.len() < z.len() / 2, "context taken over");
        wire.extend(frame(0xc2, &again, [7, 7, 7, 7]));
        let (outputs, end) = through(false, 1000, &wire);
        end.unwrap();
        let binary =
            Output::Message(Message { opcode: Data::Binary, payload: Bytes::from_static(json) });
        assert_eq!(
            outputs,
            [Output::Pass(ping.into()), text(json), Output::Pass(plain.into()), binary]
        );
    }

    #[test]
    fn a_message_reads_as_one_plain_masked_frame() {
        for len in [0, 125, 126, 65_535, 65_536, 100_000] {
            let payload = vec![b'x'; len];
            let z = deflated(&mut Compress::new(Compression::fast(), false), &payload);
            let (outputs, end) = through(true, 1 << 20, &frame(0xc1, &z, [1, 2, 3, 4]));
            end.unwrap();
            let wire = wire_of(outputs, 1 << 20);
            let mut cursor = Cursor::new(&wire[..]);
            let (header, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && !header.rsv1 && header.mask == Some([0; 4]));
            assert_eq!((header.opcode, n), (OpCode::Data(Data::Text), len as u64));
            assert_eq!(&wire[cursor.position() as usize..], &payload[..]);
        }
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

    #[test]
    fn the_window_stands_in_for_a_kept_inflater() {
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
                    expected.push(Output::Pass(frame(0x89, b"", mask).into()));
                } else {
                    wire.extend(frame(0xc1, &z, mask));
                }
                expected.push(Output::Message(Message {
                    opcode: Data::Text,
                    payload: text.clone().into(),
                }));
            }
            let mut inflater = Inflater::new(false, 1 << 20);
            let (outputs, end) = run(&mut inflater, &wire, chunk);
            end.unwrap();
            assert!(outputs == expected, "level {level:?}: the inflated messages differ");
            assert!(inflater.held() <= WINDOW, "{}", inflater.held());
        }
    }

    #[test]
    fn without_context_takeover_nothing_is_kept() {
        let json = br#"[{"channel":"/meta/handshake","version":"1.0"}]"#;
        let mut wire = Vec::new();
        for _ in 0..3 {
            let z = deflated(&mut Compress::new(Compression::default(), false), json);
            wire.extend(frame(0xc1, &z, [3, 1, 4, 1]));
        }
        let mut inflater = Inflater::new(true, 1000);
        let (outputs, end) = run(&mut inflater, &wire, 5);
        end.unwrap();
        assert_eq!(outputs, [text(json), text(json), text(json)]);
        assert_eq!(inflater.held(), 0);
        // A client that promised no context takeover and refers back anyway fails.
        let mut c = Compress::new(Compression::default(), false);
        deflated(&mut c, json);
        let (_, end) = through(true, 1000, &frame(0xc1, &deflated(&mut c, json), [0; 4]));
        assert_eq!(end, Err(Error::InvalidDeflate));
    }

    #[test]
    fn a_finished_deflate_stream_starts_a_new_window() {
        let json = br#"[{"channel":"/meta/handshake","version":"1.0"}]"#;
        let mut c = Compress::new(Compression::default(), false);
        let mut end = Vec::with_capacity(256);
        c.compress_vec(json, &mut end, FlushCompress::Finish).unwrap();
        let mut wire = frame(0xc1, &end, [1, 2, 3, 4]);
        let fresh = deflated(&mut Compress::new(Compression::default(), false), json);
        wire.extend(frame(0xc1, &fresh, [1, 2, 3, 4]));
        let mut inflater = Inflater::new(false, 1000);
        let (outputs, result) = run(&mut inflater, &wire, 7);
        result.unwrap();
        assert_eq!(outputs, [text(json), text(json)]);
        assert_eq!(inflater.held(), json.len(), "only the second message's window");
    }

    #[test]
    fn a_bomb_is_too_big_and_stays_failed() {
        let z = deflated(&mut Compress::new(Compression::best(), false), &[b' '; 50_000]);
        let mut wire = frame(0xc1, &z, [1, 2, 3, 4]);
        wire.extend(frame(0x81, b"after", [0; 4]));
        let (outputs, end) = through(false, 1024, &wire);
        assert_eq!((&outputs[..], end), (&[Output::TooBig][..], Err(Error::TooBig)));
        // tungstenite reads a header one byte over its limit.
        let wire = wire_of(outputs, 1024);
        let (header, len) = FrameHeader::parse(&mut Cursor::new(&wire)).unwrap().unwrap();
        assert_eq!((header.opcode, len), (OpCode::Data(Data::Text), 1025));
        assert_eq!(wire.len(), header.len(len));
    }

    #[test]
    fn the_limit_applies_to_the_inflated_size() {
        let exactly = vec![b'a'; 1024];
        let z = deflated(&mut Compress::new(Compression::default(), false), &exactly);
        let (outputs, end) = through(true, 1024, &frame(0xc1, &z, [9; 4]));
        assert_eq!((outputs, end), (vec![text(&exactly)], Ok(())));
        let over = vec![b'a'; 1025];
        let z = deflated(&mut Compress::new(Compression::default(), false), &over);
        let (outputs, end) = through(true, 1024, &frame(0xc1, &z, [9; 4]));
        assert_eq!((outputs, end), (vec![Output::TooBig], Err(Error::TooBig)));
    }

    #[test]
    fn compressed_frames_over_the_limit_are_refused_unread() {
        let mut inflater = Inflater::new(false, 1024);
        let limit = inflater.compressed_limit();
        // A header claiming more than the compressed limit: nothing is buffered.
        let head = frame(0xc1, &[], [0; 4]);
        let mut wire = Vec::new();
        FrameHeader {
            rsv1: true,
            opcode: OpCode::Data(Data::Text),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        }
        .format(limit + 1, &mut wire)
        .unwrap();
        assert_ne!(wire, head);
        inflater.feed(&wire);
        assert_eq!(inflater.poll(), Ok(Some(Output::TooBig)));
        assert_eq!(inflater.poll(), Err(Error::TooBig));
        assert_eq!(inflater.held(), 0);
        // The same limit across fragments.
        let half = vec![0u8; usize::try_from(limit).unwrap() / 2 + 1];
        let mut wire = frame(0x41, &half, [0; 4]);
        wire.extend(frame(0x80, &half, [0; 4]));
        let (outputs, end) = through(false, 1024, &wire);
        assert_eq!((outputs, end), (vec![Output::TooBig], Err(Error::TooBig)));
    }

    #[test]
    fn what_is_not_a_compressed_message_passes() {
        for first in [
            0x81, // uncompressed text
            0x82, // uncompressed binary
            0x01, // a first fragment, uncompressed
            0x80, // a continuation with no message: tungstenite's error
            0xc9, // a ping with RSV1: tungstenite's error
            0xe1, // RSV1 and RSV2
            0xc0, // RSV1 on a continuation
            0x8a, // pong
            0x88, // close
        ] {
            let wire = frame(first, b"payload", [1, 2, 3, 4]);
            let (outputs, end) = through(false, 1024, &wire);
            assert_eq!((outputs, end), (vec![Output::Pass(wire.into())], Ok(())), "{first:#x}");
        }
        // Unmasked (tungstenite refuses it).
        let mut wire = Vec::new();
        FrameHeader { rsv1: true, opcode: OpCode::Data(Data::Text), ..FrameHeader::default() }
            .format(3, &mut wire)
            .unwrap();
        wire.extend_from_slice(b"abc");
        let (outputs, end) = through(false, 1024, &wire);
        assert_eq!((outputs, end), (vec![Output::Pass(wire.into())], Ok(())));
        // A reserved opcode: all that follows goes to tungstenite.
        let mut wire = frame(0xc3, b"?", [0; 4]);
        wire.extend(frame(0xc1, b"\xff\xff", [0; 4]));
        let (outputs, end) = through(false, 1024, &wire);
        assert_eq!((outputs, end), (vec![Output::Pass(wire.into())], Ok(())));
    }

    #[test]
    fn a_data_frame_inside_a_compressed_message_fails() {
        let z = deflated(&mut Compress::new(Compression::default(), false), b"[]");
        for second in [0x81, 0x82, 0x01, 0xc0, 0xa0] {
            let mut wire = frame(0x41, &z, [0; 4]);
            wire.extend(frame(second, b"x", [0; 4]));
            let (outputs, end) = through(false, 1024, &wire);
            assert_eq!((outputs, end), (vec![], Err(Error::InvalidFragment)), "{second:#x}");
        }
    }

    #[test]
    fn invalid_deflate_fails() {
        let (outputs, end) = through(true, 1024, &frame(0xc1, b"\xff\xff\xff\xff", [1, 2, 3, 4]));
        assert_eq!((outputs, end), (vec![], Err(Error::InvalidDeflate)));
        // After a failure, input is ignored and polls fail the same way.
        let mut inflater = Inflater::new(true, 1024);
        inflater.feed(&frame(0xc1, b"\xff", [0; 4]));
        assert_eq!(inflater.poll(), Err(Error::InvalidDeflate));
        inflater.feed(&frame(0x81, b"[]", [0; 4]));
        assert_eq!(inflater.poll(), Err(Error::InvalidDeflate));
    }

    #[test]
    fn an_empty_compressed_message() {
        let (outputs, end) = through(false, 10, &frame(0xc1, &[0x00], [7; 4]));
        assert_eq!((outputs, end), (vec![text(b"")], Ok(())));
        let mut wire = frame(0x41, &[0x00], [7; 4]);
        wire.extend(frame(0x80, &[], [7; 4]));
        let (outputs, end) = through(false, 10, &wire);
        assert_eq!((outputs, end), (vec![text(b"")], Ok(())));
    }

    #[test]
    fn an_idle_inflater_keeps_no_buffer() {
        let mut inflater = Inflater::new(true, 1024);
        inflater.feed(&frame(0x81, &[b'x'; 200], [0; 4]));
        assert!(matches!(inflater.poll(), Ok(Some(Output::Pass(_)))));
        assert_eq!(inflater.poll(), Ok(None));
        assert_eq!(inflater.input.capacity(), 0);
    }

    /// An unmasked server frame; `first` as in [`frame`].
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            opcode: OpCode::from(first & 0x0f),
            mask: None,
            ..FrameHeader::default()
        };
        let mut f = Vec::new();
        header.format(payload.len() as u64, &mut f).unwrap();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_client_reads_unmasked_server_frames() {
        let mut c = Compress::new(Compression::fast(), false);
        let z = deflated(&mut c, b"[{\"channel\":\"/a\",\"data\":\"hello hello hello\"}]");
        let mut wire = server_frame(0xc1, &z); // FIN, RSV1, text
        wire.extend(server_frame(0x81, b"[]")); // plain
        let mut inflater = Inflater::client(false, 1 << 20);
        let (outputs, end) = run(&mut inflater, &wire, 3);
        assert_eq!(end, Ok(()));
        assert_eq!(outputs[0], text(b"[{\"channel\":\"/a\",\"data\":\"hello hello hello\"}]"));
        assert_eq!(outputs[1], Output::Pass(server_frame(0x81, b"[]").into()));
        // What tungstenite reads for it is one plain, unmasked frame.
        let [header, payload] = outputs[0].clone().into_wire(1 << 20, Role::Client);
        let (h, len) = FrameHeader::parse(&mut Cursor::new(&header[..])).unwrap().unwrap();
        assert!(h.is_final && !h.rsv1 && h.mask.is_none());
        assert_eq!(len as usize, payload.len());

        // A masked compressed frame is not a server's: handed on for tungstenite
        // to refuse.
        let masked = frame(0xc1, &z, [1, 2, 3, 4]);
        let (outputs, _) = run(&mut Inflater::client(false, 1 << 20), &masked, masked.len());
        assert_eq!(outputs, [Output::Pass(masked.into())]);
    }
}
