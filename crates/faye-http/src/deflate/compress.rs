//! Server messages, compressed each on its own (`server_no_context_takeover`).
//!
//! A compressor is a few hundred KB (its hash table alone is 128 KiB, whatever the
//! window), far more than an idle socket's few KiB, so instead of one per socket
//! there is one per thread and window size, created on first use and reset before each message.
//! Nothing in a result depends on the socket it is for: a payload compressed once
//! with window `w` can be sent to every socket whose agreed window is `w` or more.

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use super::{TRAILER, WindowBits};

/// Server text messages this short are sent as they are: a lone small message
/// barely shrinks without shared context, and resetting and running the compressor
/// costs some 15 µs.
const MIN_COMPRESS_LEN: usize = 128;

thread_local! {
    /// This thread's compressors, by window bits (9 to 15), created on first use.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// How many payloads this thread has run through a compressor.
    static RUNS: Cell<u64> = const { Cell::new(0) };
}

/// How many payloads this thread has run through a compressor so far: lets a test
/// check that a push shared by many sockets is compressed once.
pub fn compressions_on_this_thread() -> u64 {
    RUNS.get()
}

/// A server message's payload compressed with a window of at most `window` for a
/// frame with RSV1 set, or `None` when it is short or would not shrink (it is then
/// sent uncompressed, which RFC 7692 allows message by message).
///
/// Level 1: Bayeux JSON is repetitive and level 1 already finds most of it, and
/// speed counts more than the last few percent.
pub(crate) fn compress(payload: &[u8], window: WindowBits) -> Option<Bytes> {
    if payload.len() < MIN_COMPRESS_LEN {
        return None;
    }
    RUNS.set(RUNS.get() + 1);
    COMPRESSORS.with_borrow_mut(|slots| {
        let slot = &mut slots[usize::from(window.get() - 9)];
        let c = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::fast(), false, window.get())
        });
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
        Some(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;

    /// Inflates one message with an inflater whose window is only `bits`.
    fn inflate_within(data: &[u8], bits: u8) -> Vec<u8> {
        let mut d = Decompress::new_with_window_bits(false, bits);
        let mut input = data.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(d.total_in(), input.len() as u64);
        out
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn compresses_each_message_on_its_own() {
        assert_eq!(compress(b"[]", WindowBits::MAX), None, "short");
        let text = format!(r#"[{{"channel":"/a","data":"{}"}}]"#, "abc".repeat(100));
        let first = compress(text.as_bytes(), WindowBits::MAX).unwrap();
        assert!(first.len() < text.len() / 4, "{}", first.len());
        assert_eq!(inflate_within(&first, 15), text.as_bytes());
        // The same again: no reference to the first (the inflater is fresh).
        assert_eq!(compress(text.as_bytes(), WindowBits::MAX).unwrap(), first);
        // Incompressible: sent as it is.
        assert_eq!(compress(&noise(4000), WindowBits::MAX), None);
    }

    #[test]
    fn stays_within_a_small_window() {
        // Repeats 600 bytes apart: a 512-byte window cannot reach them.
        let unit = noise(600);
        let text: Vec<u8> = unit.iter().chain(&unit).chain(&unit).copied().collect();
        let wide = compress(&text, WindowBits::MAX).unwrap();
        assert!(wide.len() < 700, "{}", wide.len());
        assert_eq!(inflate_within(&wide, 15), text);
        let small = WindowBits::new(9).unwrap();
        assert_eq!(compress(&text, small), None, "nothing within 512 bytes to refer to");
        let json = format!(r#"[{{"channel":"/a","data":"{}"}}]"#, "abc ".repeat(2000));
        for bits in 9..=15 {
            let z = compress(json.as_bytes(), WindowBits::new(bits).unwrap()).unwrap();
            // An inflater limited to the same window reads it.
            assert_eq!(inflate_within(&z, bits), json.as_bytes(), "{bits} bits");
        }
    }
}
