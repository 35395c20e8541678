use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;

use crate::message::{Message, RequestItem, Wire};

/// Why a request body is not a Bayeux batch. Faye answers the malformed ones with
/// HTTP 400 `Bad request`; it has no limit on the number of messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is a number, string or boolean rather than an object or array.
    #[error("expected a JSON object or array")]
    NotObject,
    /// The batch holds more than `max` messages ([`decode_batch_limited`]). The rest
    /// of the body was not read, so it may be malformed as well.
    #[error("more than {max} messages in one batch")]
    TooMany {
        /// The limit that was passed.
        max: usize,
    },
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
    decode_batch_limited(body, usize::MAX)
}

/// [`decode_batch`] that refuses a batch of more than `max` messages as soon as it
/// reads message `max + 1`, before it reads the rest of the body. Skipped (falsy)
/// elements do not count, as they are not messages.
///
/// ```
/// use faye_protocol::{DecodeError, decode_batch_limited};
/// assert_eq!(decode_batch_limited(b"[{},{}]", 2).unwrap().len(), 2);
/// assert!(matches!(decode_batch_limited(b"[{},{},{}]", 2), Err(DecodeError::TooMany { max: 2 })));
/// assert_eq!(decode_batch_limited(b"[null,0,{}]", 1).unwrap().len(), 1);
/// ```
pub fn decode_batch_limited(body: &[u8], max: usize) -> Result<Vec<Message>, DecodeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => {
            let too_many = Cell::new(false);
            let mut de = serde_json::Deserializer::from_slice(body);
            let batch = de.deserialize_seq(BatchVisitor { max, too_many: &too_many });
            match batch {
                Ok(batch) => {
                    de.end()?;
                    Ok(batch)
                }
                Err(_) if too_many.get() => Err(DecodeError::TooMany { max }),
                Err(e) => Err(e.into()),
            }
        }
        Some(b'{') => {
            let message = serde_json::from_slice(body)?;
            if max == 0 {
                return Err(DecodeError::TooMany { max });
            }
            Ok(vec![message])
        }
        _ => match serde_json::from_slice::<Value>(body)? {
            Value::Null => Ok(Vec::new()),
            _ => Err(DecodeError::NotObject),
        },
    }
}

/// The messages of a JSON array, refusing message `max + 1`. serde_json only lets
/// a visitor fail with its own error type, so the refusal is flagged in
/// `too_many` to tell it from malformed JSON.
struct BatchVisitor<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for BatchVisitor<'_> {
    type Value = Vec<Message>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Bayeux messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Message>, A::Error> {
        let mut batch = Vec::new();
        while let Some(RequestItem(item)) = seq.next_element()? {
            let Some(message) = item else { continue };
            if batch.len() == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom(format_args!("more than {} messages", self.max)));
            }
            batch.push(message);
        }
        Ok(batch)
    }
}

/// A published message, JSON-encoded once for all its recipients (see
/// [`EncodedMessage::delivery`]). Cheap to clone: every recipient's queue holds the
/// same bytes.
///
/// It is stored as a one-message batch, `[{...}]`, so a push of just this message
/// is written as it is, with no copy; in a longer batch its object is copied in.
#[derive(Clone)]
pub struct EncodedMessage(Arc<Encoded>);

struct Encoded {
    batch: Bytes,
    /// One further encoding a transport derives from `batch` and shares between
    /// recipients as well (a compressed WebSocket message).
    derived: OnceLock<Option<Bytes>>,
}

impl EncodedMessage {
    /// Encodes a published message as subscribers receive it. `clientId` is the
    /// publisher's credential and `advice`/`successful` would let a publisher spoof
    /// replies, so they are left out.
    pub fn delivery(msg: &Message) -> Self {
        Self::encode(&Wire { msg, delivery: true })
    }

    /// Encodes every field of `msg` (a delivery an outgoing extension rewrote).
    pub fn new(msg: &Message) -> Self {
        Self::encode(msg)
    }

    fn encode(msg: &impl Serialize) -> Self {
        let mut out = Vec::with_capacity(128);
        out.push(b'[');
        // Writing to a Vec cannot fail and every field is valid JSON already.
        let _ = msg.serialize(&mut serde_json::Serializer::new(&mut out));
        out.push(b']');
        Self::from_batch(out.into())
    }

    /// A message from its JSON object as [`EncodedMessage::delivery`] wrote it (an engine
    /// that stores messages elsewhere reads them back this way). `object` is
    /// trusted to be one JSON object: it is not parsed.
    pub fn from_json(object: &[u8]) -> Self {
        let mut out = Vec::with_capacity(object.len() + 2);
        out.push(b'[');
        out.extend_from_slice(object);
        out.push(b']');
        Self::from_batch(out.into())
    }

    fn from_batch(batch: Bytes) -> Self {
        Self(Arc::new(Encoded { batch, derived: OnceLock::new() }))
    }

    /// The JSON object.
    pub fn json(&self) -> &[u8] {
        let batch = &self.0.batch;
        &batch[1..batch.len() - 1]
    }

    /// The message alone as a batch, `[{...}]`, without copying.
    pub fn batch(&self) -> Bytes {
        self.0.batch.clone()
    }

    /// The message decoded again (for extensions that must see it as a value).
    pub fn decode(&self) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(self.json())
    }

    /// Derives another encoding of [`EncodedMessage::batch`] the first time it is
    /// asked for, and hands every later caller the same bytes: a message pushed to
    /// many recipients is, for example, compressed once. `None` if `derive` declined.
    pub fn derived(&self, derive: impl FnOnce(&[u8]) -> Option<Bytes>) -> Option<Bytes> {
        self.0.derived.get_or_init(|| derive(&self.0.batch)).clone()
    }
}

impl fmt::Debug for EncodedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncodedMessage").field(&String::from_utf8_lossy(self.json())).finish()
    }
}

impl PartialEq for EncodedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Eq for EncodedMessage {}

/// Something that can be an element of a batch (a JSON array of messages).
pub trait BatchItem {
    /// Appends the element's JSON object to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
    /// A guess at the encoded size, to size the buffer.
    fn size_hint(&self) -> usize {
        64
    }
    /// The element alone as a ready-made batch, if it has one.
    fn as_batch(&self) -> Option<Bytes> {
        None
    }
}

impl BatchItem for Message {
    fn write_json(&self, out: &mut Vec<u8>) {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(out, self);
    }
}

impl BatchItem for EncodedMessage {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.json());
    }
    fn size_hint(&self) -> usize {
        self.0.batch.len()
    }
    fn as_batch(&self) -> Option<Bytes> {
        Some(self.batch())
    }
}

impl<T: BatchItem + ?Sized> BatchItem for Box<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out);
    }
    fn size_hint(&self) -> usize {
        (**self).size_hint()
    }
    fn as_batch(&self) -> Option<Bytes> {
        (**self).as_batch()
    }
}

/// Encodes messages as the JSON array Faye writes for a request or a push. A
/// single already-encoded message is returned as it is, without a copy.
///
/// ```
/// use faye_protocol::{EncodedMessage, Message, encode_batch};
/// let pushed = EncodedMessage::new(&Message::on("/chat"));
/// assert_eq!(&encode_batch(&[pushed.clone()])[..], br#"[{"channel":"/chat"}]"#);
/// assert_eq!(&encode_batch(&[pushed.clone(), pushed])[..], br#"[{"channel":"/chat"},{"channel":"/chat"}]"#);
/// assert_eq!(&encode_batch::<Message>(&[])[..], b"[]");
/// ```
pub fn encode_batch<T: BatchItem>(items: &[T]) -> Bytes {
    if let [one] = items
        && let Some(batch) = one.as_batch()
    {
        return batch;
    }
    let mut out = Vec::with_capacity(items.iter().map(|i| i.size_hint() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_json(&mut out);
    }
    out.push(b']');
    out.into()
}

/// Escapes U+2028 and U+2029, which JSON allows in strings but JavaScript source
/// does not (needed for JSON-P bodies).
pub fn escape_jsonp(json: &str) -> String {
    json.replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029")
}
