//! Monitoring events (Faye's `server.on('subscribe', ...)`).

use std::sync::Arc;

use faye_engine::{ClientId, EngineEvent};
use serde_json::value::RawValue;

/// What happened, with Faye's arguments. Events fire only on change: subscribing
/// twice to a channel reports one `Subscribe`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A client was created.
    Handshake {
        /// The new client.
        client_id: ClientId,
    },
    /// A client subscribed to a channel (or pattern) it was not subscribed to.
    Subscribe {
        /// The client.
        client_id: ClientId,
        /// The channel or pattern.
        channel: String,
    },
    /// A client left a channel: explicitly, or because it was destroyed.
    Unsubscribe {
        /// The client.
        client_id: ClientId,
        /// The channel or pattern.
        channel: String,
    },
    /// A message was accepted for publishing (whether or not anyone listens).
    /// Never for `/meta/**`.
    Publish {
        /// Whatever `clientId` the publisher sent: unvalidated, as in Faye.
        client_id: Option<String>,
        /// The channel published to.
        channel: String,
        /// The payload, as raw JSON.
        data: Box<RawValue>,
    },
    /// A client's session ended: `/meta/disconnect` or expiry.
    Disconnect {
        /// The client.
        client_id: ClientId,
    },
    /// After a client was destroyed; its connections are being closed.
    Close {
        /// The client.
        client_id: ClientId,
    },
}

impl Event {
    pub(crate) fn from_engine(event: EngineEvent) -> Option<Self> {
        Some(match event {
            EngineEvent::Handshake(client_id) => Self::Handshake { client_id },
            EngineEvent::Subscribe(client_id, channel) => Self::Subscribe { client_id, channel },
            EngineEvent::Unsubscribe(client_id, channel) => {
                Self::Unsubscribe { client_id, channel }
            }
            EngineEvent::Disconnect(client_id) => Self::Disconnect { client_id },
            EngineEvent::Close(client_id) => Self::Close { client_id },
            _ => return None,
        })
    }
}

/// A monitoring callback.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;
