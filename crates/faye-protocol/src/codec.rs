use serde::Serialize;
use serde_json::Value;

use crate::message::{BatchItem, Message, Wire};

/// Why a request body is not a Bayeux batch. Faye answers all of these with
/// HTTP 400 `Bad request`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is a number, string or boolean rather than an object or array.
    #[error("expected a JSON object or array")]
    NotObject,
}

/// Decodes a request: a JSON array of messages, a single message object, or `null`
/// (an empty batch, as in Faye). Falsy array elements are skipped, as Faye gives
/// them no reply.
///
/// ```
/// use faye_protocol::decode_batch;
/// assert_eq!(decode_batch(b" {\"channel\":\"/meta/handshake\"}").unwrap().len(), 1);
/// assert!(decode_batch(b"null").unwrap().is_empty());
/// assert!(decode_batch(b"42").is_err());
/// ```
pub fn decode_batch(body: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => {
            let items: Vec<BatchItem> = serde_json::from_slice(body)?;
            Ok(items.into_iter().filter_map(|i| i.0).collect())
        }
        Some(b'{') => Ok(vec![serde_json::from_slice(body)?]),
        _ => match serde_json::from_slice::<Value>(body)? {
            Value::Null => Ok(Vec::new()),
            _ => Err(DecodeError::NotObject),
        },
    }
}

/// Serializes a published message once for all its recipients: without `clientId`,
/// `advice` and `successful`.
pub fn encode_delivery(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing to a Vec cannot fail and every field is valid JSON already.
    let _ = Wire { msg, delivery: true }.serialize(&mut serde_json::Serializer::new(&mut out));
    out
}

/// Escapes U+2028 and U+2029, which JSON allows in strings but JavaScript source
/// does not (needed for JSON-P bodies).
pub fn escape_jsonp(json: &str) -> String {
    json.replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029")
}
