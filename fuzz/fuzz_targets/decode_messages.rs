//! Request bodies: `decode_batch` never panics, `decode_batch_limited` refuses exactly
//! the batches over its limit, every decoded message survives an encode/decode round
//! trip unchanged, and a delivery is a JSON object without the publisher's
//! `clientId` or any `advice`/`successful` a publisher could spoof.
#![no_main]

use std::collections::HashMap;

use faye_protocol::{
    DecodeError, EncodedMessage, Message, decode_batch, decode_batch_limited, encode_batch,
    escape_jsonp,
};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// Parses `json` as one JSON object (values checked for syntax only: raw `data` may
/// legally hold escapes such as a lone `\ud800` that `serde_json::Value` refuses).
fn object(json: &[u8], what: &str, m: &Message) -> HashMap<String, Box<RawValue>> {
    match serde_json::from_slice(json) {
        Ok(map) => map,
        Err(e) => panic!(
            "{what} is not a JSON object ({e}): {:?}\nmessage: {m:?}",
            String::from_utf8_lossy(json)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = decode_batch(data) else { return };
    let all: Vec<String> = batch.iter().map(Message::to_json).collect();
    for max in [batch.len(), batch.len().saturating_sub(1)] {
        match decode_batch_limited(data, max) {
            Ok(limited) => {
                assert!(batch.len() <= max, "{} messages passed a limit of {max}", batch.len());
                assert_eq!(limited.iter().map(Message::to_json).collect::<Vec<_>>(), all);
            }
            Err(DecodeError::TooMany { max: m }) => {
                assert!(m == max && batch.len() > max, "{} refused at {m}", batch.len());
            }
            Err(e) => panic!("decode_batch accepted what decode_batch_limited refused: {e}"),
        }
    }
    for m in &batch {
        let json = m.to_json();
        let fields = object(json.as_bytes(), "to_json", m);

        let again = match decode_batch(json.as_bytes()) {
            Ok(again) => again,
            Err(e) => panic!("to_json does not decode again ({e}): {json}"),
        };
        assert_eq!(again.len(), 1, "to_json decodes to {} messages: {json}", again.len());
        assert_eq!(again[0].to_json(), json, "re-encoding changed the message");

        let delivery = EncodedMessage::delivery(m);
        let delivered = object(delivery.json(), "EncodedMessage::delivery", m);
        // Alone it is its own batch; in a batch with another it is copied verbatim.
        assert_eq!(encode_batch(std::slice::from_ref(&delivery)), delivery.batch());
        let pair = encode_batch(&[delivery.clone(), delivery.clone()]);
        let inner = delivery.json();
        assert_eq!(pair.len(), 2 * inner.len() + 3, "a batch of two is not [a,b]");
        for key in ["clientId", "advice", "successful"] {
            assert!(!delivered.contains_key(key), "delivery has {key:?}: {delivered:?}");
        }
        // A delivery is the message minus those keys, nothing else.
        let mut expected = fields.keys().cloned().collect::<Vec<_>>();
        expected.retain(|k| !matches!(k.as_str(), "clientId" | "advice" | "successful"));
        expected.sort();
        let mut got = delivered.keys().cloned().collect::<Vec<_>>();
        got.sort();
        assert_eq!(got, expected, "delivery keys differ from the message's");

        // JSON-P escaping keeps valid JSON valid and leaves no raw U+2028/U+2029.
        let escaped = escape_jsonp(&json);
        assert!(!escaped.contains(['\u{2028}', '\u{2029}']));
        let _ = object(escaped.as_bytes(), "escape_jsonp", m);
    }
});
