//! A client for Faye and any Bayeux server, over WebSocket with a long-polling
//! fallback.
//!
//! [`Client`] is a cheap, cloneable handle on a background task that owns the
//! connection. It connects lazily (on the first subscribe or publish) or when
//! asked ([`Client::connect`]), reconnects with backoff after network errors and
//! server restarts (handshaking again and resubscribing everything when the
//! server forgot it), and reports its [`ConnectionState`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), faye_client::Error> {
//! use futures_util::StreamExt as _;
//!
//! let client = faye_client::Client::new("http://127.0.0.1:8000/bayeux")?;
//! let mut chat = client.subscribe("/chat/*").await?;
//! client.publish("/chat/lobby", &serde_json::json!({"text": "hi"})).await?;
//! while let Some(message) = chat.next().await {
//!     println!("{}: {}", message.channel, message.data);
//! }
//! # Ok(()) }
//! ```
//!
//! Deliveries are [`ReceivedMessage`]s, the same type the server's in-process
//! client (`faye_server::LocalClient`) hands out, and [`Subscription::recv`] and
//! [`Subscription::fell_behind`] work as they do there, so code reading
//! subscriptions moves between the two unchanged.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use faye_protocol::Message;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Serialize;
use serde_json::value::to_raw_value;
use tokio::sync::{mpsc, oneshot, watch};

mod driver;
mod extension;
#[cfg(feature = "in-process")]
mod in_process;
mod net;
mod transport;
mod types;

pub use extension::{BoxFuture, Extension};
pub use faye_protocol::ReceivedMessage;
pub use types::{ConnectionState, Error, Reason, TransportKind};

use driver::{Command, Driver, Listener, Tuning};
use net::{Net, ProxyRule};
use transport::Endpoint;

/// Messages buffered per subscription before it counts as fallen behind and is
/// ended (as the server's in-process client does).
pub const SUBSCRIPTION_BUFFER: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the handles and the driver share.
pub(crate) struct Shared {
    endpoint: Arc<Endpoint>,
    disabled: Mutex<HashSet<TransportKind>>,
    extensions: Mutex<Vec<Arc<dyn Extension>>>,
    client_id: Mutex<Option<String>>,
    /// Offer permessage-deflate on WebSocket upgrades.
    websocket_deflate: bool,
    /// The server in this process, for the in-process transport.
    #[cfg(feature = "in-process")]
    local: Option<Arc<dyn in_process::Local>>,
}

/// Settings for a [`Client`]; [`ClientBuilder::build`] starts it.
///
/// ```no_run
/// # fn demo(ca_pem: &[u8]) -> Result<(), faye_client::Error> {
/// use std::time::Duration;
/// let client = faye_client::Client::builder("https://faye.example.com/bayeux")
///     .header("Authorization", "Bearer s3cret")?
///     .ca_certs_pem(ca_pem)?
///     .proxy("http://127.0.0.1:3128")?
///     .retry(Duration::from_millis(200), Duration::from_secs(10))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    headers: HeaderMap,
    roots: Vec<CertificateDer<'static>>,
    proxy: Option<ProxyRule>,
    disabled: HashSet<TransportKind>,
    extensions: Vec<ExtensionDebug>,
    tuning: Tuning,
    connect_timeout: Duration,
    websocket_deflate: bool,
    #[cfg(feature = "in-process")]
    local: Option<LocalDebug>,
}

#[cfg(feature = "in-process")]
struct LocalDebug(Arc<dyn in_process::Local>);

#[cfg(feature = "in-process")]
impl std::fmt::Debug for LocalDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Server")
    }
}

struct ExtensionDebug(Arc<dyn Extension>);

impl std::fmt::Debug for ExtensionDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extension")
    }
}

impl ClientBuilder {
    /// A header sent on every HTTP request and on the WebSocket upgrade.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let (name, value) = header(name, value)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Trusts the certificate authorities in `pem` (one or more PEM certificates)
    /// besides the system's.
    pub fn ca_certs_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let before = self.roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            self.roots.push(cert.map_err(|e| Error::Tls(format!("bad PEM certificate: {e}")))?);
        }
        if self.roots.len() == before {
            return Err(Error::Tls("no PEM certificate found".into()));
        }
        Ok(self)
    }

    /// Trusts one more certificate authority (DER) besides the system's.
    pub fn root_certificate(mut self, der: CertificateDer<'static>) -> Self {
        self.roots.push(der);
        self
    }

    /// Connects through this HTTP proxy (`http://[user:password@]host:port` or
    /// `host:port`), with CONNECT, for every server. Without it (or
    /// [`ClientBuilder::no_proxy`]), `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`
    /// apply.
    pub fn proxy(mut self, url: &str) -> Result<Self, Error> {
        self.proxy = Some(ProxyRule::Explicit(net::parse_proxy(url)?));
        Ok(self)
    }

    /// Connects directly, whatever the environment says.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = Some(ProxyRule::Direct);
        self
    }

    /// Never uses this transport (as Faye's `client.disable('websocket')`).
    pub fn disable(mut self, transport: TransportKind) -> Self {
        self.disabled.insert(transport);
        self
    }

    /// Adds an extension (see [`Extension`]); extensions run in the order added.
    pub fn extension(mut self, extension: Arc<dyn Extension>) -> Self {
        self.extensions.push(ExtensionDebug(extension));
        self
    }

    /// The backoff between reconnection attempts: `initial` after the first
    /// failure, doubling up to `max`, each with jitter (default 0.5 s to 30 s).
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.tuning.retry = initial;
        self.tuning.max_retry = max.max(initial);
        self
    }

    /// The connect timeout assumed until the server advises one (default 60 s,
    /// as Faye); a message unanswered for 1.2 × the advised timeout counts as
    /// lost and the connection is reopened.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.tuning.timeout = timeout;
        self
    }

    /// How long opening a connection (TCP, proxy, TLS, WebSocket upgrade) may
    /// take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether to offer WebSocket compression, permessage-deflate (default yes):
    /// when the server accepts, its messages may come compressed (the client
    /// sends its own uncompressed, which RFC 7692 allows).
    pub fn websocket_deflate(mut self, on: bool) -> Self {
        self.websocket_deflate = on;
        self
    }

    /// Starts the client's background task (it does not connect yet). Must be
    /// called inside a tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let url: Uri = self.url.parse().map_err(|e| Error::Url(format!("{}: {e}", self.url)))?;
        #[cfg(feature = "in-process")]
        let in_process = self.local.is_some();
        #[cfg(not(feature = "in-process"))]
        let in_process = false;
        if !in_process {
            net::Target::of(&url)?;
        }
        let proxy = self.proxy.unwrap_or_else(ProxyRule::from_env);
        let net = Net::new(&self.roots, proxy);
        let endpoint = Arc::new(Endpoint::new(url, net, self.headers, self.connect_timeout));
        let shared = Arc::new(Shared {
            endpoint,
            disabled: Mutex::new(self.disabled),
            extensions: Mutex::new(self.extensions.into_iter().map(|e| e.0).collect()),
            client_id: Mutex::new(None),
            websocket_deflate: self.websocket_deflate,
            #[cfg(feature = "in-process")]
            local: self.local.map(|l| l.0),
        });
        let (state_tx, state) = watch::channel(ConnectionState::Disconnected(Reason::NotStarted));
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(Driver::new(shared.clone(), self.tuning, state_tx).run(rx));
        Ok(Client {
            inner: Arc::new(Inner { commands, shared, state, listeners: AtomicU64::new(0) }),
        })
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let n = HeaderName::try_from(name).map_err(|e| Error::Http(format!("header {name}: {e}")))?;
    let v = HeaderValue::try_from(value).map_err(|e| Error::Http(format!("header {name}: {e}")))?;
    Ok((n, v))
}

/// A handle on a Faye client; clones share one connection. The connection ends
/// when every handle and every [`Subscription`] is dropped (after a
/// `/meta/disconnect`), or at [`Client::disconnect`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    state: watch::Receiver<ConnectionState>,
    listeners: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.shared.endpoint.url)
            .field("client_id", &self.client_id())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the Bayeux endpoint at `url` (`http://` or `https://`), with
    /// default settings. Must be called inside a tokio runtime.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).build()
    }

    /// Settings for a client of `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            headers: HeaderMap::new(),
            roots: Vec::new(),
            proxy: None,
            disabled: HashSet::new(),
            extensions: Vec::new(),
            tuning: Tuning {
                retry: Duration::from_millis(500),
                max_retry: Duration::from_secs(30),
                timeout: Duration::from_secs(60),
            },
            connect_timeout: Duration::from_secs(10),
            websocket_deflate: true,
            #[cfg(feature = "in-process")]
            local: None,
        }
    }

    /// A client of `server`, in this process, with no network: the same API as
    /// over the network (and the same as the server's own `LocalClient` for
    /// subscriptions and deliveries). Its messages go through the server's
    /// extensions with no request, as the server's own in-process client's do.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), faye_client::Error> {
    /// let server = faye_server::Server::new(faye_engine::MemoryEngine::new(), Default::default());
    /// let client = faye_client::Client::in_process(&server)?;
    /// let mut news = client.subscribe("/news/*").await?;
    /// client.publish("/news/today", &serde_json::json!({"headline": "hi"})).await?;
    /// assert_eq!(news.recv().await.unwrap().channel, "/news/today");
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "in-process")]
    pub fn in_process<E: faye_engine::Engine>(
        server: &faye_server::Server<E>,
    ) -> Result<Self, Error> {
        Self::in_process_builder(server).build()
    }

    /// Settings for a client of `server` in this process (see
    /// [`Client::in_process`]); the network settings do not apply.
    #[cfg(feature = "in-process")]
    pub fn in_process_builder<E: faye_engine::Engine>(
        server: &faye_server::Server<E>,
    ) -> ClientBuilder {
        let mut builder = Self::builder("http://in-process/");
        builder.local = Some(LocalDebug(Arc::new(server.clone())));
        builder
    }

    fn send(&self, cmd: Command) -> Result<(), Error> {
        self.inner
            .commands
            .send(cmd)
            .map_err(|_| Error::Disconnected(Reason::Network("the client's task ended".into())))
    }

    /// Connects now (handshakes, if needed) and waits until connected. Fails only
    /// if the client stops meanwhile (the handshake was refused, or
    /// [`Client::disconnect`] was called); network errors are retried.
    pub async fn connect(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Connect(tx))?;
        rx.await.unwrap_or(Err(Error::Disconnected(Reason::Requested)))
    }

    /// Subscribes to a channel or pattern (`/chat/*`, `/chat/**`), once the
    /// server has accepted. Several subscriptions to one channel share one
    /// `/meta/subscribe`; dropping the last one unsubscribes.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.inner.listeners.fetch_add(1, Ordering::Relaxed);
        let behind = Arc::new(AtomicBool::new(false));
        // Built first, so that a cancelled call still unsubscribes (on drop).
        let subscription = Subscription {
            channel: channel.to_owned(),
            id,
            rx,
            behind: behind.clone(),
            commands: self.inner.commands.clone(),
        };
        let (reply, answer) = oneshot::channel();
        let listener = Listener { id, tx, behind };
        self.send(Command::Subscribe { channel: channel.to_owned(), listener, reply })?;
        answer.await.unwrap_or(Err(Error::Disconnected(Reason::Requested)))?;
        Ok(subscription)
    }

    /// Publishes `data` to `channel`; resolves with the server's reply once it
    /// accepted, or fails with its error (`Error::Rejected("405:/*:Invalid
    /// channel")`).
    ///
    /// The message is queued when `publish` is called, not when the future is
    /// first polled, so publishes leave in the order of the calls (a burst need
    /// not be awaited one by one), and they never overtake one another on the
    /// way. A publish always settles: while the connection is down it waits and
    /// is sent again; it fails if the client is disconnected. For a deadline,
    /// wrap it in a timeout: a publish whose future was dropped before it was
    /// sent is not sent.
    pub fn publish<D: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &D,
    ) -> impl Future<Output = Result<Message, Error>> + Send + use<D> {
        let message = to_raw_value(data)
            .map(|data| Message { data: Some(data), ..Message::on(channel) })
            .map_err(Error::from);
        let queued = message.and_then(|m| self.queue_publish(m));
        async move { queued?.await.unwrap_or(Err(Error::Disconnected(Reason::Requested))) }
    }

    /// Publishes a message built by hand (with `ext` or other fields); `id` and
    /// `clientId` are set by the client. Queued at the call, as [`Client::publish`].
    pub fn publish_message(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<Message, Error>> + Send + use<> {
        let queued = self.queue_publish(message);
        async move { queued?.await.unwrap_or(Err(Error::Disconnected(Reason::Requested))) }
    }

    fn queue_publish(
        &self,
        message: Message,
    ) -> Result<oneshot::Receiver<Result<Message, Error>>, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish { message: Box::new(message), reply })?;
        Ok(answer)
    }

    /// Ends the session (`/meta/disconnect`): pending operations fail, every
    /// subscription ends. The client may be used again afterwards: it starts a
    /// new session.
    pub async fn disconnect(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(tx))?;
        let _ = rx.await;
        Ok(())
    }

    /// Drops the current connection and opens a new one at once (keeping the
    /// session and its subscriptions): for when the app knows the network changed.
    pub fn reconnect(&self) {
        let _ = self.send(Command::Reconnect);
    }

    /// The client id the server gave, while the client has a session.
    pub fn client_id(&self) -> Option<String> {
        lock(&self.inner.shared.client_id).clone()
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A receiver of every change of [`ConnectionState`].
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Sets a header sent on every later HTTP request and WebSocket upgrade.
    pub fn set_header(&self, name: &str, value: &str) -> Result<(), Error> {
        let (name, value) = header(name, value)?;
        lock(&self.inner.shared.endpoint.headers).insert(name, value);
        Ok(())
    }

    /// Stops using a transport from the next connection on (call
    /// [`Client::reconnect`] to apply it at once).
    pub fn disable(&self, transport: TransportKind) {
        lock(&self.inner.shared.disabled).insert(transport);
    }

    /// Adds an extension; it sees every later message.
    pub fn add_extension(&self, extension: Arc<dyn Extension>) {
        lock(&self.inner.shared.extensions).push(extension);
    }

    /// Removes an extension added before (the same `Arc`).
    pub fn remove_extension(&self, extension: &Arc<dyn Extension>) {
        lock(&self.inner.shared.extensions).retain(|e| !Arc::ptr_eq(e, extension));
    }
}

/// Messages arriving on one subscribed channel or pattern: a [`Stream`] of
/// [`ReceivedMessage`]s (`futures_util::StreamExt::next`) or [`Subscription::recv`].
/// Dropping it (or [`Subscription::cancel`]) unsubscribes, with a
/// `/meta/unsubscribe` once no subscription to the channel is left.
///
/// It ends when the client disconnects, when the server refuses the channel
/// on a resubscribe, or when it falls [`SUBSCRIPTION_BUFFER`] messages behind
/// ([`Subscription::fell_behind`]).
///
/// [`Stream`]: futures_util::Stream
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    id: u64,
    rx: mpsc::Receiver<ReceivedMessage>,
    behind: Arc<AtomicBool>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The channel or pattern subscribed to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next message, or `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<ReceivedMessage> {
        self.rx.recv().await
    }

    /// Whether it was ended for falling [`SUBSCRIPTION_BUFFER`] messages behind
    /// (what was buffered is still received first).
    pub fn fell_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// Unsubscribes (the same as dropping it).
    pub fn cancel(self) {}
}

impl futures_util::Stream for Subscription {
    type Item = ReceivedMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReceivedMessage>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let channel = std::mem::take(&mut self.channel);
        let _ = self.commands.send(Command::Unsubscribe { channel, listener: self.id });
    }
}
