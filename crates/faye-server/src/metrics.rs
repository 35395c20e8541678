//! What the server records through the [`metrics`] facade: the embedding app
//! installs the recorder it likes (`faye serve` exports Prometheus' text format);
//! without one, recording costs next to nothing.
//!
//! Every name is listed in [`NAMES`]; `docs/operations.md` says what each means.
//! The recording calls are kept here and in [`Server::process`](crate::Server::process),
//! so that the hot paths stay readable.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, EngineEvent, Subscribed,
};

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
/// Seconds each engine operation took, by operation (`op` label) and outcome
/// (`ok` or `error`), when the engine is wrapped in [`Metered`] (histogram).
pub const ENGINE_SECONDS: &str = "faye_engine_operation_seconds";
/// Persistent sockets open now, by transport (`transport` label: `websocket`,
/// `eventsource`, `in-process`; gauge).
pub const SOCKETS: &str = "faye_sockets";
/// Channels and patterns with at least one subscriber (on this node, with a
/// shared engine), sampled from the engine at each scrape (gauge).
pub const CHANNELS: &str = "faye_channels";
/// Messages queued for clients and not yet taken, sampled from the engine at
/// each scrape (gauge).
pub const QUEUED: &str = "faye_queued_messages";
/// Clients destroyed because their queue was full (counter; recorded by the
/// engine).
pub const SLOW_CONSUMERS: &str = faye_engine::SLOW_CONSUMERS_METRIC;

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
    CHANNELS,
    QUEUED,
    SLOW_CONSUMERS,
];

/// Describes the metrics to the installed recorder (their `# HELP` lines), and
/// registers each at zero so that it is exported before anything happens. Call
/// it once, after installing the recorder and before serving.
pub fn describe() {
    for gauge in [SESSIONS, SUBSCRIPTIONS, CHANNELS, QUEUED] {
        metrics::gauge!(gauge).increment(0.0);
    }
    for counter in [HANDSHAKES, PUBLISHED, DELIVERED, BATCHES, SLOW_CONSUMERS] {
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
    metrics::describe_gauge!(CONNECTS_HELD, "/meta/connect requests held open now, by transport");
    metrics::describe_gauge!(CHANNELS, "Channels and patterns with subscribers");
    metrics::describe_gauge!(QUEUED, "Messages queued for clients, not yet taken");
    metrics::describe_counter!(SLOW_CONSUMERS, "Clients dropped because their queue was full");
    metrics::describe_counter!(BATCHES, "Request batches processed");
    metrics::describe_gauge!(SOCKETS, "Persistent sockets (WebSocket, EventSource) open now");
    metrics::describe_histogram!(
        ENGINE_SECONDS,
        metrics::Unit::Seconds,
        "Engine operation latency, by operation and outcome"
    );
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

/// Sets the gauges sampled from the engine ([`Engine::stats`]); call it before
/// rendering a scrape.
pub fn engine_stats(stats: faye_engine::EngineStats) {
    if let Some(channels) = stats.channels {
        metrics::gauge!(CHANNELS).set(channels as f64);
    }
    if let Some(queued) = stats.queued {
        metrics::gauge!(QUEUED).set(queued as f64);
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

/// A message of a batch completing alongside the next ones; a held connect is
/// counted in [`CONNECTS_HELD`] while it lives.
pub(crate) struct Held<F> {
    inner: F,
    _connect: Option<HeldConnect>,
}

impl<F> Held<F> {
    /// A held `/meta/connect`, by its batch's transport.
    pub(crate) fn connect(inner: F, transport: &'static str) -> Self {
        Self { inner, _connect: Some(HeldConnect::start(transport)) }
    }

    /// Another message (a publish in the engine's line).
    pub(crate) fn other(inner: F) -> Self {
        Self { inner, _connect: None }
    }
}

impl<F: Future + Unpin> Future for Held<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// Counts a held `/meta/connect` in [`CONNECTS_HELD`] while it lives (a future,
/// or a connect parked on a socket).
#[derive(Debug)]
pub(crate) struct HeldConnect(&'static str);

impl HeldConnect {
    pub(crate) fn start(transport: &'static str) -> Self {
        metrics::gauge!(CONNECTS_HELD, "transport" => transport).increment(1.0);
        Self(transport)
    }
}

impl Drop for HeldConnect {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTS_HELD, "transport" => self.0).decrement(1.0);
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

/// An engine whose every operation is timed into [`ENGINE_SECONDS`]. Wrap the
/// engine in it when a recorder is installed (`faye serve --metrics-addr` does);
/// otherwise it only costs two clock reads per operation.
#[derive(Debug)]
pub struct Metered<E>(E);

impl<E: Engine> Metered<E> {
    /// Times `engine`'s operations.
    pub fn new(engine: E) -> Self {
        Self(engine)
    }

    /// The engine inside.
    pub fn inner(&self) -> &E {
        &self.0
    }
}

async fn timed<T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let start = Instant::now();
    let result = fut.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!(ENGINE_SECONDS, "op" => op, "outcome" => outcome)
        .record(start.elapsed().as_secs_f64());
    result
}

impl<E: Engine> Engine for Metered<E> {
    fn start(&self, ctx: EngineContext) {
        self.0.start(ctx);
    }

    fn stats(&self) -> faye_engine::EngineStats {
        self.0.stats()
    }

    async fn create_client(&self) -> Result<ClientId, EngineError> {
        timed("create_client", self.0.create_client()).await
    }

    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        timed("client_exists", self.0.client_exists(client)).await
    }

    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        timed("destroy_client", self.0.destroy_client(client)).await
    }

    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        timed("ping", self.0.ping(client)).await
    }

    async fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> Result<Subscribed, EngineError> {
        timed("subscribe", self.0.subscribe(client, channel)).await
    }

    async fn unsubscribe(&self, client: &ClientId, channel: &Channel) -> Result<bool, EngineError> {
        timed("unsubscribe", self.0.unsubscribe(client, channel)).await
    }

    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        timed("publish", self.0.publish(channel, message)).await
    }

    async fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> Result<Vec<EncodedMessage>, EngineError> {
        timed("take_queue", self.0.take_queue(client, request)).await
    }

    async fn shutdown(&self) {
        self.0.shutdown().await;
    }
}
