//! The permessage-deflate read side (`faye_http::deflate::inflate`, reached through
//! its hidden public module): client bytes in, passed frames and inflated messages
//! out. It never panics, never hands out a message over the size limit, holds no
//! more than one compressed message and the 32 KiB window, and gives the same
//! output however the bytes are split. When the input is a valid client's (every
//! compressed message from a real compressor, context taken over or not as agreed),
//! the output is exactly what that client sent.
//!
//! The wire is built from a grammar (compressed messages, fragmented or not, with
//! pings between fragments; plain frames; raw bytes) and fed in chunks of
//! arbitrary sizes.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use faye_http::deflate::inflate::{Error, Inflater, Message, Output};
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The most a client's deflate stream refers back.
const WINDOW: usize = 1 << 15;

#[derive(Arbitrary, Debug)]
struct Input {
    no_context_takeover: bool,
    /// The size limit of an inflated message.
    limit: u16,
    level: u8,
    mask: [u8; 4],
    pieces: Vec<Piece>,
    /// How many bytes each read hands over, in turn (0 means 1).
    reads: Vec<u16>,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    /// A message from the client's compressor, in `parts` frames (a ping between
    /// each two when `pings`); `fresh`: the compressor is reset first.
    Compressed { text: Vec<u8>, binary: bool, parts: u8, pings: bool, fresh: bool },
    /// A frame with any first header byte (FIN, RSV, opcode), masked.
    Frame { first: u8, payload: Vec<u8> },
    /// Anything.
    Raw(Vec<u8>),
}

/// A masked client frame.
fn frame(header: FrameHeader, payload: &[u8], wire: &mut Vec<u8>) {
    let mask = header.mask.unwrap_or_default();
    header.format(payload.len() as u64, wire).unwrap();
    wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

fn header(first: u8, mask: [u8; 4]) -> FrameHeader {
    FrameHeader {
        is_final: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        rsv2: first & 0x20 != 0,
        rsv3: first & 0x10 != 0,
        opcode: OpCode::from(first & 0x0f),
        mask: Some(mask),
    }
}

/// Appends `output`, joining consecutive passes (a frame may pass in pieces).
fn push(outputs: &mut Vec<Output>, output: Output) {
    match (outputs.last_mut(), output) {
        (Some(Output::Pass(joined)), Output::Pass(more)) => {
            *joined = [&joined[..], &more[..]].concat().into();
        }
        (_, output) => outputs.push(output),
    }
}

/// `text` as one message from `c`: sync flush, trailer stripped.
fn deflate(c: &mut Compress, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut consumed = 0;
    loop {
        let before = c.total_in();
        c.compress_vec(&text[consumed..], &mut out, FlushCompress::Sync).unwrap();
        consumed += (c.total_in() - before) as usize;
        if consumed == text.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.is_empty() {
        // No input since the last flush: zlib flushes nothing, and the message is
        // the trailer alone.
        return out;
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// The wire, and what a correct inflater makes of it if the wire is a valid
/// client's.
fn build(input: &Input, limit: usize) -> (Vec<u8>, Option<Vec<Output>>) {
    let compressed_limit = Inflater::new(false, limit).compressed_limit() as usize;
    let mut c = Compress::new(Compression::new(u32::from(input.level % 10)), false);
    let mut wire = Vec::new();
    let mut expected = Some(Vec::new());
    for piece in &input.pieces {
        match piece {
            Piece::Compressed { text, binary, parts, pings, fresh } => {
                if *fresh || input.no_context_takeover {
                    c.reset();
                }
                let z = deflate(&mut c, text);
                let parts = usize::from(*parts % 4) + 1;
                let size = z.len().div_ceil(parts).max(1);
                let opcode = if *binary { 0x02 } else { 0x01 };
                let mut chunks: Vec<&[u8]> = z.chunks(size).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                let last = chunks.len() - 1;
                let mut so_far = 0;
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let first = match (i == 0, i == last) {
                        (true, true) => 0xc0 | opcode,
                        (true, false) => 0x40 | opcode,
                        (false, true) => 0x80,
                        (false, false) => 0x00,
                    };
                    frame(header(first, input.mask), chunk, &mut wire);
                    so_far += chunk.len();
                    if so_far > compressed_limit
                        && let Some(e) = &mut expected
                    {
                        // Refused at this frame's header, unread.
                        e.push(Output::TooBig);
                        return (wire, expected);
                    }
                    if *pings && i < last {
                        frame(header(0x89, input.mask), b"p", &mut wire);
                        if let Some(e) = &mut expected {
                            let mut ping = Vec::new();
                            frame(header(0x89, input.mask), b"p", &mut ping);
                            push(e, Output::Pass(ping.into()));
                        }
                    }
                }
                if let Some(e) = &mut expected {
                    if text.len() > limit {
                        e.push(Output::TooBig);
                        // Nothing after it.
                        return (wire, expected);
                    }
                    let opcode = if *binary { Data::Binary } else { Data::Text };
                    let payload = Bytes::copy_from_slice(text);
                    e.push(Output::Message(Message { opcode, payload }));
                }
            }
            Piece::Frame { first, payload } => {
                let start = wire.len();
                frame(header(*first, input.mask), payload, &mut wire);
                // Only complete uncompressed data messages are sure to pass as they are.
                match (&mut expected, first) {
                    (Some(e), 0x81 | 0x82) => push(e, Output::Pass(wire[start..].to_vec().into())),
                    _ => expected = None,
                }
            }
            Piece::Raw(bytes) => {
                wire.extend_from_slice(bytes);
                expected = None;
            }
        }
    }
    (wire, expected)
}

/// Feeds `wire` in reads of the given sizes, polling after each; returns the
/// outputs (consecutive passes joined) and how it ended.
fn run(
    input: &Input,
    limit: usize,
    wire: &[u8],
    reads: &[u16],
) -> (Vec<Output>, Result<(), Error>) {
    let mut inflater = Inflater::new(input.no_context_takeover, limit);
    let most_held = usize::try_from(inflater.compressed_limit()).unwrap() + 4 + WINDOW;
    let mut outputs: Vec<Output> = Vec::new();
    let mut rest = wire;
    let mut turn = 0;
    while !rest.is_empty() {
        let size =
            reads.get(turn % reads.len().max(1)).map_or(rest.len(), |&n| usize::from(n).max(1));
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        turn += 1;
        inflater.feed(now);
        loop {
            let output = match inflater.poll() {
                Ok(Some(output)) => output,
                Ok(None) => break,
                Err(e) => {
                    // The same error again, whatever comes after.
                    inflater.feed(b"\x81\x80\0\0\0\0");
                    assert_eq!(inflater.poll(), Err(e));
                    return (outputs, Err(e));
                }
            };
            assert!(inflater.held() <= most_held, "{} held", inflater.held());
            match &output {
                Output::Message(m) => {
                    assert!(m.payload.len() <= limit, "{} > {limit}", m.payload.len());
                }
                Output::Pass(bytes) => assert!(!bytes.is_empty(), "an empty pass"),
                Output::TooBig => {}
            }
            push(&mut outputs, output);
        }
    }
    (outputs, Ok(()))
}

fuzz_target!(|input: Input| {
    let limit = usize::from(input.limit);
    let (wire, expected) = build(&input, limit);
    let split = run(&input, limit, &wire, &input.reads);
    let whole = run(&input, limit, &wire, &[]);
    assert_eq!(split, whole, "the output depends on how the bytes were split");
    if let Some(expected) = expected {
        let (outputs, end) = whole;
        assert_eq!(outputs, expected, "a valid client's messages");
        let too_big = outputs.last() == Some(&Output::TooBig);
        assert_eq!(end, if too_big { Err(Error::TooBig) } else { Ok(()) });
    }
});
