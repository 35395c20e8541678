//! The faye-rs Bayeux server: Faye 1.4.3's message handling over any [`Engine`].
//!
//! [`Server::process`] takes a decoded request batch and returns the replies for
//! it, exactly as Faye's `Server#process`: one list per request, a `/meta/connect`
//! reply followed by the messages it delivers. It knows nothing of HTTP; the
//! transports (in `faye-http`) decode, call it and write the result.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use faye_engine::MemoryEngine;
//! use faye_protocol::{decode_batch, encode_batch};
//! use faye_server::{Context, Server, ServerOptions};
//!
//! let server = Server::new(MemoryEngine::new(), ServerOptions::default());
//! let request = decode_batch(br#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#).unwrap();
//! let replies = server.process(request, &Context::trusted()).await;
//! let json = String::from_utf8(encode_batch(&replies).to_vec()).unwrap();
//! assert!(json.contains(r#""successful":true"#));
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use faye_engine::{ClientId, Engine, EngineContext, Limits};
use faye_protocol::{BatchItem, EncodedMessage, Message, MetaChannel};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::task::Poll;

mod auth;
mod binding;
mod client;
mod cow_list;
mod extension;
mod handlers;
pub mod metrics;
mod monitor;
mod order;
mod rate;
mod socket;

pub use auth::TokenAuth;
use binding::Registry;
pub use client::{ClientError, LocalClient, ReceivedMessage, SUBSCRIPTION_BUFFER, Subscription};
use cow_list::CowList;
pub use extension::{BoxFuture, Extension, RequestInfo};
use extension::{Stage, pipe};
pub use monitor::Event;
pub use socket::{Push, Socket};

/// Server settings, mirroring Faye's adapter options.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    timeout: Duration,
    interval: Duration,
    limits: Limits,
    max_channel_length: usize,
    max_channel_segments: usize,
    order_wait: Duration,
    publish_rate: rate::PublishRate,
    max_clients: usize,
    max_handshakes_per_request: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            interval: Duration::ZERO,
            limits: Limits::default(),
            max_channel_length: 1024,
            max_channel_segments: 64,
            order_wait: Duration::from_millis(500),
            publish_rate: rate::PublishRate::default(),
            max_clients: 100_000,
            max_handshakes_per_request: 1,
        }
    }
}

impl ServerOptions {
    /// How long a `/meta/connect` is held when there is nothing to deliver (Faye's
    /// `timeout`, default 60 s). Clients expire after twice this without a connect.
    /// Zero means the default, as in Faye. More than a day is taken as a day: far
    /// longer ones overflow the clock when expiries are computed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let timeout = timeout.min(Duration::from_secs(86_400));
        self.timeout = if timeout.is_zero() { Duration::from_secs(60) } else { timeout };
        self
    }

    /// The pause clients are advised to make between connects (Faye's engine
    /// `interval`, default 0).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Most channels and patterns one client may subscribe to (default 1000; Faye
    /// has no limit). Past it, `/meta/subscribe` fails with
    /// `403:<channel>:Too many subscriptions`.
    pub fn max_subscriptions_per_client(mut self, max: usize) -> Self {
        self.limits.max_subscriptions = max;
        self
    }

    /// Most messages queued for one client (default 100 000; Faye has no limit). A
    /// client whose queue is full when another message arrives is too slow to keep
    /// up: its session is ended, so its Faye client re-handshakes and knows it
    /// missed messages. Other clients are unaffected.
    pub fn max_queue_per_client(mut self, max: usize) -> Self {
        self.limits.max_queue = max;
        self
    }

    /// Most bytes of messages queued for one client (default 16 MiB; Faye has no
    /// limit), with the same consequence as [`ServerOptions::max_queue_per_client`].
    pub fn max_queue_bytes_per_client(mut self, max: usize) -> Self {
        self.limits.max_queue_bytes = max;
        self
    }

    /// Longest channel name, in bytes (default 1024; Faye has no limit). Longer
    /// names are answered `405:<channel>:Invalid channel`.
    pub fn max_channel_length(mut self, max: usize) -> Self {
        self.max_channel_length = max;
        self
    }

    /// Most `/`-separated segments in a channel name or pattern (default 64; Faye
    /// has no limit). A publish reaches n + 2 subscription keys for a name of n
    /// segments, so this bounds the work one publish can ask for. Past it:
    /// `405:<channel>:Invalid channel`.
    pub fn max_channel_segments(mut self, max: usize) -> Self {
        self.max_channel_segments = max;
        self
    }

    /// How long a client's message may wait for one the client sent before it
    /// (default 500 ms; zero turns ordering off). A client's messages are applied
    /// in the order of their ids, which Faye's and CometD's clients number from
    /// one counter; concurrent requests of one client can arrive out of that
    /// order, and a message whose predecessor is missing waits for it this long
    /// at most, then goes ahead. See `docs/ordering.md`.
    pub fn order_wait(mut self, wait: Duration) -> Self {
        self.order_wait = wait;
        self
    }

    /// Most live clients (sessions) on the server (default 100 000; Faye has no
    /// limit). Each costs memory and a timer for 2 × timeout after its last
    /// connect, so without a bound a handshake loop grows the server until it
    /// fails. Past it, a handshake is answered `503::Too many clients` with
    /// `advice: {reconnect: "handshake", interval: <timeout>}`. The in-process
    /// client ([`Server::client`]) is not refused.
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max;
        self
    }

    /// Most clients one request (one HTTP request or WebSocket frame) may create
    /// (default 1: Faye's and CometD's clients send a handshake on its own). Further
    /// handshakes in the same request are answered
    /// `400::Too many handshakes in one request` with
    /// `advice: {reconnect: "handshake", interval: <timeout>}`.
    pub fn max_handshakes_per_request(mut self, max: usize) -> Self {
        self.max_handshakes_per_request = max;
        self
    }

    /// Most publishes per second one client may make (default: no limit, as in
    /// Faye), with bursts of up to a second's worth. Past it a publish is refused
    /// with `429:<channel>:Too many publishes` (Faye's client reports it to the
    /// publication's errback; it does not retry). Clients are told apart by their
    /// session on this server; publishes naming no client of this server share one
    /// allowance, so an anonymous flood is throttled as one client.
    pub fn max_publishes_per_second(mut self, limit: Option<u32>) -> Self {
        self.publish_rate.messages = limit.map(f64::from);
        self
    }

    /// Most bytes of published messages per second one client may send (default:
    /// no limit), as [`ServerOptions::max_publishes_per_second`] counts messages.
    /// A message bigger than a second's allowance goes through when the client has
    /// sent nothing for a second, so no message is refused for its size alone.
    pub fn max_publish_bytes_per_second(mut self, limit: Option<u64>) -> Self {
        self.publish_rate.bytes = limit.map(|b| b as f64);
        self
    }

    /// The configured timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }
}

/// Where a batch came from, as far as the handlers need to know.
///
/// Only a trusted context, asked for by name with [`Context::trusted`], may use the
/// `/meta/**` and `/service/**` channels that remote clients may not subscribe to.
pub struct Context<'a, E: Engine> {
    socket: Option<&'a Socket<E>>,
    request: Option<Arc<RequestInfo>>,
    trusted: bool,
    /// Clients created by this batch so far.
    handshakes: AtomicUsize,
    /// When the batch arrived: a connect in it is answered within its hold of
    /// this moment, however long the messages before it took.
    arrived: tokio::time::Instant,
    /// The turn of the message being handled (see [`order`]), released as soon
    /// as its effect's place is fixed: a publish's when the engine has it in
    /// line, before it completes.
    turn: std::sync::Mutex<Option<order::Turn>>,
    /// Set when the message being handled has its place (see `turn`).
    placed: std::sync::atomic::AtomicBool,
    /// Whether a connect held on the socket is parked there rather than waited
    /// for (see [`Context::park_connects`]), and whether one was.
    parks: bool,
    parked: std::sync::atomic::AtomicU64,
}

impl<'a, E: Engine> Context<'a, E> {
    /// A batch from a remote client, in an HTTP request.
    pub fn remote(request: Arc<RequestInfo>) -> Self {
        Self {
            socket: None,
            request: Some(request),
            trusted: false,
            handshakes: AtomicUsize::new(0),
            arrived: tokio::time::Instant::now(),
            turn: std::sync::Mutex::new(None),
            placed: std::sync::atomic::AtomicBool::new(false),
            parks: false,
            parked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A batch that arrived on a persistent socket: a `/meta/connect` in it binds
    /// the client to the socket, and deliveries are pushed there. Trusted only if
    /// the socket is ([`Server::trusted_socket`]).
    pub fn on_socket(socket: &'a Socket<E>) -> Self {
        Self {
            socket: Some(socket),
            // The socket's own, made only if something reads it (`request()`).
            request: None,
            trusted: socket.is_trusted(),
            handshakes: AtomicUsize::new(0),
            arrived: tokio::time::Instant::now(),
            turn: std::sync::Mutex::new(None),
            placed: std::sync::atomic::AtomicBool::new(false),
            parks: false,
            parked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A batch from inside the process (Faye's `request === null`), trusted: it may
    /// use `/meta/**` and `/service/**` channels that remote clients may not.
    pub fn trusted() -> Self {
        Self {
            socket: None,
            request: None,
            trusted: true,
            handshakes: AtomicUsize::new(0),
            arrived: tokio::time::Instant::now(),
            turn: std::sync::Mutex::new(None),
            placed: std::sync::atomic::AtomicBool::new(false),
            parks: false,
            parked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A socket's batch whose `/meta/connect`, when the server holds it, is not
    /// waited for: the batch completes with no replies, and the socket hands
    /// them out (the connect's last, as in one frame) as [`Push::Replies`] from
    /// [`Socket::next_push`] when the hold ends. A held connect then costs the socket a few hundred bytes of data
    /// instead of a live future. For sockets whose loop sends what
    /// `next_push` returns (the WebSocket transport); without a socket it
    /// changes nothing.
    pub fn park_connects(mut self) -> Self {
        self.parks = self.socket.is_some();
        self
    }

    pub(crate) fn parks_connects(&self) -> bool {
        self.parks
    }

    /// A connect of the batch was parked on the socket, as number `id`.
    pub(crate) fn parked(&self, id: u64) {
        self.parked.store(id, Ordering::Relaxed);
    }

    /// Whether a connect of the batch was parked on the socket (see
    /// [`Context::park_connects`]): the batch's replies then go with its reply,
    /// and [`Server::process`] returns none.
    pub fn parked_a_connect(&self) -> bool {
        self.parked.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// The request the batch came in (a socket's, made when first asked for):
    /// what extensions see. `None` inside the process.
    pub(crate) fn request(&self) -> Option<&RequestInfo> {
        match (&self.request, self.socket) {
            (Some(request), _) => Some(request),
            (None, Some(socket)) => socket.request().map(|r| &**r),
            (None, None) => None,
        }
    }

    /// How the batch arrived (`in-process` inside the process).
    pub(crate) fn transport(&self) -> &'static str {
        match (&self.request, self.socket) {
            (Some(request), _) => request.transport,
            (None, Some(socket)) => socket.transport(),
            (None, None) => "in-process",
        }
    }

    /// The peer's address, when the transport knows it.
    pub(crate) fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        match (&self.request, self.socket) {
            (Some(request), _) => request.remote_addr,
            (None, Some(socket)) => socket.remote_addr(),
            (None, None) => None,
        }
    }

    /// Counts a client created by this batch; returns how many it created before.
    pub(crate) fn count_handshake(&self) -> usize {
        self.handshakes.fetch_add(1, Ordering::Relaxed)
    }

    /// How long ago the batch arrived.
    pub(crate) fn age(&self) -> Duration {
        self.arrived.elapsed()
    }

    /// Lets the next message go (the client's, and the batch's): the current
    /// one's effect has its place.
    pub(crate) fn placed(&self) {
        self.release_turn();
        self.placed.store(true, Ordering::Relaxed);
    }

    /// Lets the client's next message go. Done when a message is handled, or
    /// earlier by [`Context::placed`].
    pub(crate) fn release_turn(&self) {
        let turn = self.turn.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(turn);
    }
}

impl<E: Engine> std::fmt::Debug for Context<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("socket", &self.socket)
            .field("request", &self.request)
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// One element of a reply batch.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A reply built by the server.
    Message(Box<Message>),
    /// A published message delivered to the client, encoded once for every recipient.
    Delivery(EncodedMessage),
}

impl Reply {
    pub(crate) fn message(m: Message) -> Self {
        Self::Message(Box::new(m))
    }
}

/// Replies are written with [`faye_protocol::encode_batch`], as everything else.
impl BatchItem for Reply {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Message(m) => m.write_json(out),
            Self::Delivery(d) => d.write_json(out),
        }
    }
    fn size_hint(&self) -> usize {
        match self {
            Self::Message(m) => m.size_hint(),
            Self::Delivery(d) => d.size_hint(),
        }
    }
    fn as_batch(&self) -> Option<Bytes> {
        match self {
            Self::Message(_) => None,
            Self::Delivery(d) => d.as_batch(),
        }
    }
}

/// A Bayeux server over the engine `E`. Cheap to clone.
pub struct Server<E: Engine> {
    shared: Arc<Shared<E>>,
}

impl<E: Engine> Clone for Server<E> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<E: Engine> std::fmt::Debug for Server<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("options", &self.shared.options)
            .field("extensions", &self.shared.extensions.snapshot().len())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

/// The parts of a batch still running after their turn (see `process_batch`).
enum HeldParts<F> {
    None,
    One(F),
    Many(FuturesUnordered<F>),
}

impl<F: Future> HeldParts<F> {
    fn push(&mut self, part: F) {
        *self = match std::mem::replace(self, Self::None) {
            Self::None => Self::One(part),
            Self::One(first) => {
                let many = FuturesUnordered::new();
                many.push(first);
                many.push(part);
                Self::Many(many)
            }
            Self::Many(many) => {
                many.push(part);
                Self::Many(many)
            }
        };
    }
}

struct Shared<E> {
    engine: E,
    registry: Arc<Registry>,
    extensions: CowList<Arc<dyn Extension>>,
    options: ServerOptions,
}

impl<E: Engine> Server<E> {
    /// Starts `engine` and builds a server over it.
    pub fn new(engine: E, options: ServerOptions) -> Self {
        let registry = Arc::new(Registry::default());
        registry.rates.configure(options.publish_rate);
        engine.start(EngineContext {
            listener: registry.clone(),
            timeout: options.timeout,
            limits: options.limits,
        });
        Self {
            shared: Arc::new(Shared { engine, registry, extensions: CowList::default(), options }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.shared.engine
    }

    /// The options the server runs with.
    pub fn options(&self) -> &ServerOptions {
        &self.shared.options
    }

    /// Handles a request batch and returns its replies, in completion order as in
    /// Faye; a held `/meta/connect` delays the whole reply until it completes.
    ///
    /// Messages are applied in the order their client sent them, within the batch
    /// and across concurrent batches of the same client (see
    /// [`ServerOptions::order_wait`]): each is handled until it has had its effect
    /// before the next starts; a publish once the engine has it in line (see
    /// [`Engine::publish`]) and a `/meta/connect` once it holds, both then
    /// completing alongside.
    ///
    /// Logged within a `batch` span naming the transport, the peer's address and
    /// the client (by its tag, [`ClientId::log_tag`]) of the batch's first message.
    pub async fn process(&self, messages: Vec<Message>, ctx: &Context<'_, E>) -> Vec<Reply> {
        use tracing::Instrument as _;
        let client =
            messages.first().and_then(|m| m.client_id.as_deref()).and_then(ClientId::parse);
        // `remote` is given with the span (not recorded after), so the span's
        // fields are formatted once; it comes last, as it did when recorded.
        let span = tracing::info_span!(
            "batch",
            transport = ctx.transport(),
            client = client.as_ref().map(ClientId::log_tag),
            remote = ctx.remote_addr().map(tracing::field::display),
        );
        self.process_batch(messages, ctx).instrument(span).await
    }

    async fn process_batch(&self, messages: Vec<Message>, ctx: &Context<'_, E>) -> Vec<Reply> {
        // What is still running once its turn is over. Most batches leave one
        // thing or none (a long-poll: its connect), which is then awaited as it is;
        // only a second one makes the `FuturesUnordered` (completion order).
        let mut held = HeldParts::None;
        let mut replies = Vec::new();
        for msg in messages {
            let connect = msg.channel.as_deref() == Some(MetaChannel::Connect.name());
            // A connect never waits for the client's earlier messages.
            let turn = self.turn(&msg, !connect).await;
            if connect {
                let mut connect = Box::pin(self.handle(msg, ctx));
                // Run it until it holds; it counts as applied from then on.
                let first = std::future::poll_fn(|cx| Poll::Ready(connect.as_mut().poll(cx)));
                match first.await {
                    Poll::Ready(mut part) => replies.append(&mut part),
                    Poll::Pending => {
                        held.push(metrics::Held::connect(connect, ctx.transport()));
                    }
                }
                drop(turn);
            } else {
                *ctx.turn.lock().unwrap_or_else(|e| e.into_inner()) = turn;
                ctx.placed.store(false, Ordering::Relaxed);
                let mut handling = Box::pin(self.handle(msg, ctx));
                // Run it until it completes, or until its effect has its place (a
                // publish in the engine's line): the next message may go then, and
                // this one completes alongside.
                let done = std::future::poll_fn(|cx| match handling.as_mut().poll(cx) {
                    Poll::Ready(part) => Poll::Ready(Some(part)),
                    Poll::Pending if ctx.placed.load(Ordering::Relaxed) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                });
                match done.await {
                    Some(mut part) => replies.append(&mut part),
                    None => held.push(metrics::Held::other(handling)),
                }
                ctx.release_turn();
            }
        }
        match held {
            HeldParts::None => {}
            HeldParts::One(one) => replies.append(&mut one.await),
            HeldParts::Many(mut many) => {
                while let Some(mut part) = many.next().await {
                    replies.append(&mut part);
                }
            }
        }
        metrics::replies(&replies);
        let parked = ctx.parked.load(Ordering::Relaxed);
        if let Some(socket) = ctx.socket.filter(|_| parked != 0 && !replies.is_empty()) {
            socket.join_parked(parked, replies);
            return Vec::new();
        }
        replies
    }

    /// Waits for `msg`'s turn among its client's messages (if `may_wait`); see
    /// [`order`].
    async fn turn(&self, msg: &Message, may_wait: bool) -> Option<order::Turn> {
        let wait = self.shared.options.order_wait;
        if wait.is_zero() {
            return None;
        }
        let wait = if may_wait { wait } else { Duration::ZERO };
        self.shared.registry.order.turn(msg, wait).await
    }

    /// A socket for a persistent transport of a remote client; see [`Socket`].
    /// `request` is what its outgoing extensions see (the upgrade or EventSource
    /// request).
    pub fn socket(&self, request: RequestInfo) -> Socket<E> {
        Socket::remote(self.clone(), &request)
    }

    /// A socket for code inside the process, with no request: batches on it are
    /// trusted (see [`Context::trusted`]). The in-process client uses one.
    pub fn trusted_socket(&self) -> Socket<E> {
        Socket::trusted(self.clone())
    }

    /// Adds an extension; it runs after those already added.
    pub fn add_extension(&self, extension: Arc<dyn Extension>) {
        self.shared.extensions.push(extension.clone());
        extension.added();
    }

    /// Removes every occurrence of `extension` (compared by identity).
    pub fn remove_extension(&self, extension: &Arc<dyn Extension>) {
        if self.shared.extensions.retain(|e| !Arc::ptr_eq(e, extension)) > 0 {
            extension.removed();
        }
    }

    /// Calls `listener` for every monitoring [`Event`], synchronously, in the task
    /// where it happens: keep it quick and hand heavy work to a channel.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let server = faye_server::Server::new(faye_engine::MemoryEngine::new(), Default::default());
    /// server.on_event(|event| {
    ///     if let faye_server::Event::Subscribe { client_id, channel } = event {
    ///         println!("{client_id} subscribed to {channel}");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.shared.registry.monitors.push(Arc::new(listener));
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        self.shared.registry.emit(event);
    }

    /// Whether any extension is installed.
    pub(crate) fn has_extensions(&self) -> bool {
        !self.shared.extensions.is_empty()
    }

    /// Runs deliveries through the outgoing extensions for one recipient. Without
    /// extensions this is free: the shared bytes go out as they are.
    pub(crate) async fn outgoing_deliveries(
        &self,
        messages: Vec<EncodedMessage>,
        request: Option<&RequestInfo>,
    ) -> Vec<EncodedMessage> {
        if self.shared.extensions.is_empty() {
            return messages;
        }
        let extensions = self.shared.extensions.snapshot();
        let mut out = Vec::with_capacity(messages.len());
        for encoded in messages {
            let Ok(message) = encoded.decode() else { continue };
            if let Some(message) = pipe(&extensions, Stage::Outgoing, message, request).await {
                out.push(EncodedMessage::new(&message));
            }
        }
        out
    }

    /// Whether the server can serve: not shutting down, and its engine answers
    /// within `within` (a networked engine's backend may be down). The error says
    /// why not, for a readiness check (`/readyz`).
    pub async fn ready(&self, within: Duration) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        // Any id will do: the question is whether the engine answers.
        let probe = faye_protocol::ClientId::from_random_bytes([0; 20]);
        match tokio::time::timeout(within, self.engine().client_exists(&probe)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("engine unreachable: {e}")),
            Err(_) => Err(format!("engine unreachable: no answer within {within:?}")),
        }
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.registry.shutdown.is_cancelled()
    }

    /// Answers every held connect at once, ends every socket's stream of pushes,
    /// and stops the engine. Clients reconnect (to this server once it is back, or
    /// to another) following the usual advice.
    pub async fn shutdown(&self) {
        self.shared.registry.close_all();
        self.shared.engine.shutdown().await;
    }
}
