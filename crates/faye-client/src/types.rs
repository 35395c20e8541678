//! The client's public vocabulary: transports, connection states and errors.

use std::fmt;

/// A way of carrying Bayeux messages to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// One WebSocket carries everything (`ws://` or `wss://`, same path).
    WebSocket,
    /// HTTP POSTs: one held `/meta/connect` and, beside it, one request at a time
    /// for everything else.
    LongPolling,
    /// A `faye_server::Server` in this process ([`Client::in_process`](crate::Client::in_process)).
    InProcess,
}

impl TransportKind {
    /// The connection type's name in Bayeux (`websocket`, `long-polling`).
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::LongPolling => "long-polling",
            Self::InProcess => "in-process",
        }
    }

    /// The transport named `name` in Bayeux, if the client has it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "websocket" => Some(Self::WebSocket),
            "long-polling" => Some(Self::LongPolling),
            "in-process" => Some(Self::InProcess),
            _ => None,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the client is not (or no longer) connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Nothing has asked it to connect yet.
    NotStarted,
    /// [`Client::disconnect`](crate::Client::disconnect) was called.
    Requested,
    /// [`Client::reconnect`](crate::Client::reconnect) was called.
    ReconnectRequested,
    /// The connection failed: refused, reset, timed out, an HTTP error...
    Network(String),
    /// The server no longer knows the client (it restarted, or the session
    /// expired): the client handshakes again and resubscribes everything.
    SessionLost,
    /// The server refused the handshake (the Bayeux error string).
    HandshakeRejected(String),
    /// The server advised `reconnect: none`: the client stops.
    AdviceNone,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("not started"),
            Self::Requested => f.write_str("disconnect requested"),
            Self::ReconnectRequested => f.write_str("reconnect requested"),
            Self::Network(e) => write!(f, "network error: {e}"),
            Self::SessionLost => f.write_str("the server no longer knows this client"),
            Self::HandshakeRejected(e) => write!(f, "handshake rejected: {e}"),
            Self::AdviceNone => f.write_str("the server advised not to reconnect"),
        }
    }
}

/// Where the client's connection stands; watch it with
/// [`Client::state_changes`](crate::Client::state_changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a transport and handshaking, for the first time.
    Connecting,
    /// Handshaken, with a `/meta/connect` cycle running over `transport`.
    Connected {
        /// The transport in use.
        transport: TransportKind,
    },
    /// The connection was lost; the client is getting it back (with backoff).
    Reconnecting(Reason),
    /// Not connected, and not trying: before the first use, after
    /// [`Client::disconnect`](crate::Client::disconnect), or after the server
    /// said to stop. The next subscribe, publish or connect starts again.
    Disconnected(Reason),
}

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused: the Bayeux error string, e.g. `405:/*:Invalid channel`,
    /// or whatever a server extension set (as the in-process client's
    /// `ClientError::Rejected`).
    #[error("rejected by the server: {0}")]
    Rejected(String),
    /// An extension dropped the message, so it was never sent.
    #[error("no reply (an extension dropped the message)")]
    NoReply,
    /// The data could not be serialized to JSON.
    #[error("data is not serializable: {0}")]
    Data(String),
    /// The URL (of the server or of the proxy) is not usable.
    #[error("bad URL: {0}")]
    Url(String),
    /// A connection failed.
    #[error("{0}")]
    Io(String),
    /// TLS failed (an unknown certificate authority, a name mismatch...).
    #[error("TLS: {0}")]
    Tls(String),
    /// The proxy refused the tunnel.
    #[error("proxy: {0}")]
    Proxy(String),
    /// The server answered with an HTTP error, or not with Bayeux messages.
    #[error("HTTP: {0}")]
    Http(String),
    /// No transport could be used (all disabled, or none the server supports).
    #[error("no usable transport: {0}")]
    NoTransport(String),
    /// The client disconnected (or stopped) before the operation completed.
    #[error("the client is disconnected ({0})")]
    Disconnected(Reason),
    /// The operation's deadline passed before the server answered.
    #[error("timed out")]
    Timeout,
    /// This many messages already wait to be sent (the connection is down, or
    /// slower than the app): the publish was refused at once.
    #[error("{0} messages already wait to be sent")]
    Backlog(usize),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Data(e.to_string())
    }
}
