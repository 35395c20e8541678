//! What the server records through the [`metrics`] facade: the embedding app
//! installs the recorder it likes (`faye serve` exports Prometheus' text format);
//! without one, recording costs next to nothing.
//!
//! Every name is listed in [`NAMES`]; `docs/operations.md` says what each means.
//! The recording calls are kept here and in [`Server::process`](crate::Server::process),
//! so that the hot paths stay readable.

use faye_engine::EngineEvent;

use crate::Reply;

/// Live sessions (clients) this process knows of (gauge).
pub const SESSIONS: &str = "faye_sessions";
/// Handshakes that created a client (counter).
pub const HANDSHAKES: &str = "faye_handshakes_total";
/// Subscriptions (client × channel or pattern) this process made or saw (gauge).
pub const SUBSCRIPTIONS: &str = "faye_subscriptions";
/// Messages published by clients and accepted (counter).
pub const PUBLISHED: &str = "faye_messages_published_total";
/// Messages delivered to subscribers, counted per recipient (counter).
pub const DELIVERED: &str = "faye_messages_delivered_total";
/// Replies carrying a Bayeux error, by its code (`code` label; counter).
pub const ERRORS: &str = "faye_errors_total";
/// `/meta/connect` requests being held open right now (gauge).
pub const CONNECTS_HELD: &str = "faye_connects_held";
/// Request batches processed (counter).
pub const BATCHES: &str = "faye_batches_total";
/// Persistent sockets open now, by transport (`transport` label: `websocket`,
/// `eventsource`, `in-process`; gauge).
pub const SOCKETS: &str = "faye_sockets";

/// Every metric the server records.
pub const NAMES: &[&str] = &[
    SESSIONS,
    HANDSHAKES,
    SUBSCRIPTIONS,
    PUBLISHED,
    DELIVERED,
    ERRORS,
    CONNECTS_HELD,
    BATCHES,
    SOCKETS,
];

/// Describes the metrics to the installed recorder (their `# HELP` lines), and
/// registers each at zero so that it is exported before anything happens. Call
/// it once, after installing the recorder and before serving.
pub fn describe() {
    for gauge in [SESSIONS, SUBSCRIPTIONS, CONNECTS_HELD] {
        metrics::gauge!(gauge).increment(0.0);
    }
    for counter in [HANDSHAKES, PUBLISHED, DELIVERED, BATCHES] {
        metrics::counter!(counter).increment(0);
    }
    metrics::describe_gauge!(SESSIONS, "Live sessions (clients) this process knows of");
    metrics::describe_counter!(HANDSHAKES, "Clients created by a handshake");
    metrics::describe_gauge!(
        SUBSCRIPTIONS,
        "Subscriptions (client x channel) seen by this process"
    );
    metrics::describe_counter!(PUBLISHED, "Messages published and accepted");
    metrics::describe_counter!(DELIVERED, "Messages delivered, once per recipient");
    metrics::describe_counter!(ERRORS, "Replies with a Bayeux error, by code");
    metrics::describe_gauge!(CONNECTS_HELD, "/meta/connect requests held open now");
    metrics::describe_counter!(BATCHES, "Request batches processed");
    metrics::describe_gauge!(SOCKETS, "Persistent sockets (WebSocket, EventSource) open now");
}

/// An engine event; `clients` is the registry's count after it.
pub(crate) fn engine_event(event: &EngineEvent, clients: usize) {
    match event {
        EngineEvent::Handshake(_) => {
            metrics::counter!(HANDSHAKES).increment(1);
            metrics::gauge!(SESSIONS).set(clients as f64);
        }
        EngineEvent::Disconnect(_) => metrics::gauge!(SESSIONS).set(clients as f64),
        EngineEvent::Subscribe(..) => metrics::gauge!(SUBSCRIPTIONS).increment(1.0),
        EngineEvent::Unsubscribe(..) => metrics::gauge!(SUBSCRIPTIONS).decrement(1.0),
        _ => {}
    }
}

/// Messages delivered down a socket.
pub(crate) fn delivered(count: usize) {
    if count > 0 {
        metrics::counter!(DELIVERED).increment(count as u64);
    }
}

/// A batch's replies: publishes accepted, deliveries, errors by code.
pub(crate) fn replies(replies: &[Reply]) {
    let mut published = 0u64;
    let mut delivered = 0u64;
    for reply in replies {
        match reply {
            Reply::Delivery(_) => delivered += 1,
            Reply::Message(m) => {
                if let Some(error) = &m.error {
                    let code = error.split(':').next().unwrap_or_default();
                    let code = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
                        code.to_owned()
                    } else {
                        "other".to_owned()
                    };
                    metrics::counter!(ERRORS, "code" => code).increment(1);
                } else if m.successful == Some(true)
                    && m.channel.as_deref().is_some_and(|c| !c.starts_with("/meta/"))
                {
                    published += 1;
                }
            }
        }
    }
    metrics::counter!(BATCHES).increment(1);
    if published > 0 {
        metrics::counter!(PUBLISHED).increment(published);
    }
    if delivered > 0 {
        metrics::counter!(DELIVERED).increment(delivered);
    }
}

/// Counts a held connect while it lives.
pub(crate) struct HeldConnect(());

impl HeldConnect {
    pub(crate) fn start() -> Self {
        metrics::gauge!(CONNECTS_HELD).increment(1.0);
        Self(())
    }
}

impl Drop for HeldConnect {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTS_HELD).decrement(1.0);
    }
}

/// Counts a persistent socket in [`SOCKETS`] while it lives.
#[derive(Debug)]
pub(crate) struct OpenSocket(&'static str);

impl OpenSocket {
    pub(crate) fn start(transport: &'static str) -> Self {
        metrics::gauge!(SOCKETS, "transport" => transport).increment(1.0);
        Self(transport)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!(SOCKETS, "transport" => self.0).decrement(1.0);
    }
}
