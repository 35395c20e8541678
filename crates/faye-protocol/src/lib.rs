//! Pure Bayeux protocol for faye-rs, wire-compatible with Faye 1.4.3.
//!
//! This crate knows nothing of sockets, clocks or randomness: it decodes request
//! batches, validates channel names, expands a channel into the subscription keys
//! it must reach, formats Faye's exact error strings and encodes messages.
//!
//! ```
//! use faye_protocol::{channel, decode_batch};
//!
//! let batch = decode_batch(br#"[{"channel":"/chat/room","data":{"text":"hi"}}]"#).unwrap();
//! assert_eq!(batch[0].channel.as_deref(), Some("/chat/room"));
//! // `data` stays raw JSON: it is never re-parsed.
//! assert_eq!(batch[0].data.as_ref().unwrap().get(), r#"{"text":"hi"}"#);
//! let room = channel::Channel::parse("/chat/room").unwrap();
//! assert_eq!(room.expand().iter().collect::<Vec<_>>(), ["/**", "/chat/room", "/chat/*", "/chat/**"]);
//! ```

pub mod channel;
mod client_id;
mod codec;
mod error;
mod message;

pub use channel::Channel;
pub use client_id::ClientId;
pub use codec::{
    BatchItem, DecodeError, EncodedMessage, decode_batch, decode_batch_limited, encode_batch,
    escape_jsonp,
};
pub use error::{BayeuxError, ErrorCode};
pub use message::{Message, ReceivedMessage, is_truthy, js_string};

/// The Bayeux version Faye answers in every handshake reply.
pub const BAYEUX_VERSION: &str = "1.0";

/// The connection types a Faye 1.4.3 server announces, in Faye's order.
pub const CONNECTION_TYPES: [&str; 6] = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
    "eventsource",
    "in-process",
];

/// The five meta channels, matched by exact string equality (the CVE-2020-11020 fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaChannel {
    /// `/meta/handshake`
    Handshake,
    /// `/meta/connect`
    Connect,
    /// `/meta/disconnect`
    Disconnect,
    /// `/meta/subscribe`
    Subscribe,
    /// `/meta/unsubscribe`
    Unsubscribe,
}

impl MetaChannel {
    /// The meta channel named exactly `name`, or `None` (no prefix matching).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "/meta/handshake" => Self::Handshake,
            "/meta/connect" => Self::Connect,
            "/meta/disconnect" => Self::Disconnect,
            "/meta/subscribe" => Self::Subscribe,
            "/meta/unsubscribe" => Self::Unsubscribe,
            _ => return None,
        })
    }

    /// The channel name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "/meta/handshake",
            Self::Connect => "/meta/connect",
            Self::Disconnect => "/meta/disconnect",
            Self::Subscribe => "/meta/subscribe",
            Self::Unsubscribe => "/meta/unsubscribe",
        }
    }
}
