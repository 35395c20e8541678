//! Engines store Faye's state: live clients, their subscriptions and their queues of
//! undelivered messages.
//!
//! The [`Engine`] trait is shaped for a networked engine (Redis) as much as for the
//! [`MemoryEngine`]: every method is async and fallible, and the engine tells the
//! server through an [`EngineListener`] when a client has mail or was destroyed. The
//! engine knows nothing of Bayeux replies or transports: a queued message is an
//! [`EncodedMessage`], serialized once and shared by every recipient.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use faye_protocol::channel::Channel;
pub use faye_protocol::{ClientId, EncodedMessage};

mod expiry;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;

pub use memory::MemoryEngine;

/// An engine failure (a networked engine's backend unreachable, say).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The storage backend failed.
    #[error("engine backend error: {0}")]
    Backend(String),
    /// The engine was shut down.
    #[error("engine is shut down")]
    Shutdown,
}

/// Events an engine reports, in Faye's monitoring vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A client was created.
    Handshake(ClientId),
    /// A client subscribed to a channel it was not subscribed to before.
    Subscribe(ClientId, String),
    /// A client left a channel: explicitly, or because the client was destroyed.
    Unsubscribe(ClientId, String),
    /// A client's session ended (explicit disconnect or expiry).
    Disconnect(ClientId),
    /// After a client is destroyed: every server must close its connections.
    Close(ClientId),
}

/// Totals an engine keeps for monitoring (`None` where it keeps none).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Channels and patterns with at least one subscriber (held by this process,
    /// for an engine shared by several).
    pub channels: Option<u64>,
    /// Messages queued for clients and not yet taken.
    pub queued: Option<u64>,
}

impl EngineStats {
    /// Totals with both counts known.
    pub fn new(channels: u64, queued: u64) -> Self {
        Self { channels: Some(channels), queued: Some(queued) }
    }
}

/// The counter an engine increments for each client it destroys because its
/// queue was full (a consumer too slow to keep up), through the `metrics` facade.
pub const SLOW_CONSUMERS_METRIC: &str = "faye_slow_consumers_dropped_total";

/// What an engine calls back into. Implemented by the server's connection registry.
pub trait EngineListener: Send + Sync + 'static {
    /// `client` has messages waiting in its queue. Called on the publish path, so it
    /// must be cheap and must not block.
    fn mail(&self, client: &ClientId);
    /// Every client in `clients` has messages waiting: one publish's recipients,
    /// told at once so the listener can look them up in one pass.
    fn mail_all(&self, clients: &[ClientId]) {
        for client in clients {
            self.mail(client);
        }
    }
    /// A monitoring or lifecycle event.
    fn event(&self, event: EngineEvent);
}

/// What the server hands an engine when it starts it.
#[derive(Clone)]
pub struct EngineContext {
    /// Told about mail and lifecycle events.
    pub listener: Arc<dyn EngineListener>,
    /// The server's connection timeout T; clients expire 2T after their last ping.
    pub timeout: Duration,
    /// Per-client bounds the engine enforces.
    pub limits: Limits,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext")
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Per-client bounds, so that one client cannot take the server's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most channels and patterns one client may be subscribed to.
    pub max_subscriptions: usize,
    /// Most messages queued for one client. A client whose queue is full when a
    /// message arrives is too slow to keep up: it is destroyed (its session ends,
    /// and a Faye client re-handshakes), rather than silently losing messages.
    pub max_queue: usize,
    /// Most bytes queued for one client (the JSON of its queued messages, counted
    /// in full even where recipients share it), with the same consequence: a few
    /// large messages weigh as much as many small ones.
    pub max_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_subscriptions: 1000, max_queue: 100_000, max_queue_bytes: 16 << 20 }
    }
}

/// The result of [`Engine::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The subscription is new.
    Added,
    /// The client was already subscribed (or does not exist).
    Unchanged,
    /// The client is at [`Limits::max_subscriptions`]; nothing changed.
    LimitReached,
}

/// Storage for clients, subscriptions and queues (Faye's engine contract, §2.2).
///
/// Channels arrive parsed ([`Channel`]), so an engine need not check them. An
/// engine routes a publish to `channel` to the union of subscribers of the keys of
/// [`Channel::expand`], at most once per client.
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Called once by the server before any other method.
    fn start(&self, ctx: EngineContext);

    /// Creates a client with a fresh CSPRNG id, pings it and reports `Handshake`.
    fn create_client(&self) -> impl Future<Output = Result<ClientId, EngineError>> + Send;

    /// Whether the client exists and has not expired.
    fn client_exists(
        &self,
        client: &ClientId,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Destroys a client: unsubscribes it from everything (`Unsubscribe` for each),
    /// drops its queue, then reports `Disconnect` and `Close`. Unknown ids are ignored.
    fn destroy_client(
        &self,
        client: &ClientId,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Refreshes the client's lifetime: it now expires 2T from now.
    fn ping(&self, client: &ClientId) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Subscribes; a `Subscribe` event only if the subscription is new.
    fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> impl Future<Output = Result<Subscribed, EngineError>> + Send;

    /// Unsubscribes; `true` (and an `Unsubscribe` event) only if it existed.
    fn unsubscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Queues `message` once for every client subscribed to a key of
    /// `channel.expand()` and calls [`EngineListener::mail`] for each. A recipient
    /// whose queue is full ([`Limits::max_queue`], [`Limits::max_queue_bytes`]) is
    /// destroyed instead.
    ///
    /// A publish's place in the order of publishes is fixed when the returned
    /// future is first polled: publishes first polled one after another reach
    /// every subscriber in that order, however long each takes to complete. The
    /// server relies on this to apply a client's publishes in order without
    /// waiting for each to complete (an engine with a network round trip would
    /// otherwise cap a client at one publish per round trip).
    fn publish(
        &self,
        channel: &Channel,
        message: EncodedMessage,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Takes every message queued for the client, oldest first.
    ///
    /// `request` is the id of the long-poll `/meta/connect` the messages will
    /// answer, `None` when they go down a socket. A client that did not get its
    /// answer asks again with the same id (Faye's client resends a failed message
    /// as it was), so when `request` is the id of the last take that returned
    /// messages, those are returned again, ahead of anything newer: an answer lost
    /// on the way (a dropped connection, a node killed) is not a loss. Any other
    /// take forgets them.
    fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> impl Future<Output = Result<Vec<EncodedMessage>, EngineError>> + Send;

    /// Totals for monitoring; cheap enough to ask for on every metrics scrape
    /// (a walk over the clients at most). The default keeps none.
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }

    /// Stops timers and releases resources; the engine is not used afterwards.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// A fresh client id from the operating system's CSPRNG-seeded generator.
pub fn generate_client_id() -> ClientId {
    ClientId::from_random_bytes(rand::random())
}
