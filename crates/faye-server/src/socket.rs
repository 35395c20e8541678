//! Persistent sockets (WebSocket; later EventSource): the client a socket carries
//! is bound by a validated `/meta/connect` on it, and deliveries are pushed.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use faye_engine::{ClientId, EncodedMessage, Engine};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::{RequestInfo, Server};

/// What a socket should send next.
#[derive(Debug)]
pub enum Push {
    /// Messages for the bound client, oldest first: send them as one frame
    /// ([`faye_protocol::encode_batch`]).
    Messages(Vec<EncodedMessage>),
    /// The bound client's session ended or the server is shutting down: send any
    /// replies still pending, then close the socket.
    Closed,
    /// No client has been bound to the socket for the server's timeout (it never
    /// sent a valid `/meta/connect`, or its client moved to another socket): close
    /// it, as it serves no one and keeps its request's headers.
    Unbound,
}

/// The server side of one persistent socket.
///
/// A socket is bound to a client only by a `/meta/connect` that passed validation
/// (Faye binds before validating, which lets anyone who knows a clientId take over
/// its deliveries). A later valid connect for another client moves the binding.
/// Dropping the socket unbinds it; the session lives on until it expires.
pub struct Socket<E: Engine> {
    server: Server<E>,
    request: Option<Arc<RequestInfo>>,
    trusted: bool,
    binding: Mutex<Option<(ClientId, Arc<Binding>)>>,
    rebound: Notify,
    /// The connect held on this socket, cancelled when a newer one replaces it.
    held: Mutex<CancellationToken>,
    /// When the socket next checks that its client still exists: one timer
    /// for the socket's life, moved only when it fires, so that a push (each
    /// push is a new `next_push`) does not arm and cancel a timer of its own.
    /// Made at the first wait (a socket may be made outside a runtime).
    quiet: Mutex<Option<Pin<Box<Sleep>>>>,
    /// Counts the socket in `faye_sockets` while it lives.
    _open: crate::metrics::OpenSocket,
}

impl<E: Engine> Socket<E> {
    /// A remote client's socket, opened by `request`.
    pub(crate) fn remote(server: Server<E>, request: RequestInfo) -> Self {
        Self::new(server, Some(Arc::new(request)), false)
    }

    /// A socket for code in the process: no request, trusted.
    pub(crate) fn trusted(server: Server<E>) -> Self {
        Self::new(server, None, true)
    }

    fn new(server: Server<E>, request: Option<Arc<RequestInfo>>, trusted: bool) -> Self {
        let transport = request.as_ref().map_or("in-process", |r| r.transport);
        Self {
            _open: crate::metrics::OpenSocket::start(transport),
            server,
            request,
            trusted,
            binding: Mutex::new(None),
            rebound: Notify::new(),
            held: Mutex::new(CancellationToken::new()),
            quiet: Mutex::new(None),
        }
    }

    /// The request that opened the socket (`None` for a trusted socket).
    pub fn request(&self) -> Option<&Arc<RequestInfo>> {
        self.request.as_ref()
    }

    /// Whether batches on it are trusted: only sockets made by
    /// [`Server::trusted_socket`] are.
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    fn binding(&self) -> MutexGuard<'_, Option<(ClientId, Arc<Binding>)>> {
        self.binding.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the socket to `client` (called by the connect handler once the client
    /// is known to exist) and returns the binding to hold the connect on.
    pub(crate) fn bind(&self, client: ClientId) -> Arc<Binding> {
        let registry = &self.server.shared.registry;
        let mut binding = self.binding();
        if let Some((bound, conn)) = binding.as_ref() {
            if *bound == client && !conn.ended.is_cancelled() {
                return conn.clone();
            }
            registry.unbind(bound, conn);
        }
        let conn = Binding::new(true);
        registry.bind(client, conn.clone());
        *binding = Some((client, conn.clone()));
        drop(binding);
        self.rebound.notify_one();
        conn
    }

    /// Starts holding a connect on this socket and answers the one held before it:
    /// every held connect is a future alive for the whole timeout, so a socket
    /// sending connects in a loop would otherwise pile them up without bound. A
    /// socket carries one client at a time, so this is also one per client, as for
    /// HTTP (see `Registry::bind`). The returned token is cancelled when the next
    /// connect on the socket supersedes this one.
    pub(crate) fn hold_next(&self) -> CancellationToken {
        let next = CancellationToken::new();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *held, next.clone()).cancel();
        next
    }

    /// Binds the socket to `client` if the client exists (EventSource, whose URL
    /// names the client). Returns whether it was bound.
    pub async fn attach(&self, client: &str) -> bool {
        let Some(id) = ClientId::parse(client) else {
            return false;
        };
        match self.server.engine().client_exists(&id).await {
            Ok(true) => {
                self.bind(id);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(error = %e, "engine failed");
                false
            }
        }
    }

    /// The client this socket is bound to, if any.
    pub fn client_id(&self) -> Option<ClientId> {
        self.binding().as_ref().map(|(id, _)| *id)
    }

    /// Completes when the socket's check timer fires, and sets it `timeout` on.
    async fn quiet_elapsed(&self, timeout: Duration) {
        std::future::poll_fn(|cx| {
            let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
            let quiet = quiet.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if quiet.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            quiet.as_mut().reset(Instant::now() + timeout);
            Poll::Ready(())
        })
        .await;
    }

    /// Waits until there is something to push. Once the engine has handed over the
    /// client's messages they exist only in this future: poll it to completion rather
    /// than dropping it (keep it across `select!` turns).
    pub async fn next_push(&self) -> Push {
        let shutdown = &self.server.shared.registry.shutdown;
        let timeout = self.server.shared.options.timeout;
        loop {
            let current = self.binding().clone();
            let Some((client, conn)) = current else {
                tokio::select! {
                    _ = self.rebound.notified() => continue,
                    _ = shutdown.cancelled() => return Push::Closed,
                    _ = tokio::time::sleep(timeout) => return Push::Unbound,
                }
            };
            tokio::select! {
                _ = conn.mail.notified() => {
                    // No yield to gather more first: it costs a scheduler round trip per
                    // push, and under load a socket that runs late finds several
                    // messages queued anyway, which then go out as one frame.
                    match self.server.engine().take_queue(&client, None).await {
                        Ok(messages) if !messages.is_empty() => {
                            let request = self.request.as_deref();
                            let messages = self.server.outgoing_deliveries(messages, request).await;
                            if !messages.is_empty() {
                                crate::metrics::delivered(messages.len());
                                return Push::Messages(messages);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(client = client.log_tag(), error = %e, "could not read the queue"),
                    }
                }
                _ = conn.ended.cancelled() => {
                    if conn.client_closed() || shutdown.is_cancelled() {
                        return Push::Closed;
                    }
                    // Superseded by a newer binding for the same client: detach.
                    let mut binding = self.binding();
                    if binding.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, &conn)) {
                        *binding = None;
                    }
                }
                _ = self.rebound.notified() => {}
                // A binding made after shutdown began is never ended by it.
                _ = shutdown.cancelled() => return Push::Closed,
                // The client's end normally arrives as an engine event; one that never
                // does (the client was destroyed between `attach` finding it and the
                // binding, or by another server sharing the engine) would leave the
                // socket open forever, so a socket checks every timeout.
                () = self.quiet_elapsed(timeout) => {
                    if let Ok(false) = self.server.engine().client_exists(&client).await {
                        return Push::Closed;
                    }
                }
            }
        }
    }
}

impl<E: Engine> std::fmt::Debug for Socket<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("client_id", &self.client_id())
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl<E: Engine> Drop for Socket<E> {
    fn drop(&mut self) {
        if let Some((client, conn)) = self.binding().take() {
            self.server.shared.registry.unbind(&client, &conn);
        }
    }
}
