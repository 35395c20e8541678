//! Persistent sockets (WebSocket; later EventSource): the client a socket carries
//! is bound by a validated `/meta/connect` on it, and deliveries are pushed.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use faye_engine::{ClientId, EncodedMessage, Engine};
use faye_protocol::Message;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::binding::{self, Binding, Signal};
use crate::extension::KeptRequest;
use crate::{Reply, RequestInfo, Server};

/// What a socket should send next.
#[derive(Debug)]
pub enum Push {
    /// Messages for the bound client, oldest first: send them as one frame
    /// ([`faye_protocol::encode_batch`]).
    Messages(Vec<EncodedMessage>),
    /// The replies to one batch processed with
    /// [`Context::park_connects`](crate::Context::park_connects) whose connect
    /// was held, now that its hold ended, through the outgoing extensions: send
    /// them as one frame.
    Replies(Vec<Reply>),
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
    /// Made into a `RequestInfo` only when something reads it.
    request: Option<KeptRequest>,
    trusted: bool,
    binding: Mutex<Option<(ClientId, Arc<Binding>)>>,
    /// Raised by the socket's bindings (mail, their end), by a new binding and
    /// by a parked connect falling due: the one thing `next_push` waits on
    /// while bound, beside its timer.
    signal: Arc<Signal>,
    /// The connect held on this socket as a future (a batch not processed with
    /// `park_connects`), cancelled when a newer one replaces it.
    held: Mutex<Option<CancellationToken>>,
    /// The connect parked on this socket, and replies due.
    parked: Mutex<Parked>,
    /// The socket's one timer, for the sooner of its client check and its
    /// parked connect's end; moved only when that changes, so that a push
    /// (each push is a new `next_push`) does not arm and cancel one of its own.
    /// Made at the first wait (a socket may be made outside a runtime).
    timer: Mutex<Timer>,
    /// Counts the socket in `faye_sockets` while it lives.
    _open: crate::metrics::OpenSocket,
}

/// Connects held as data: the one holding, and those whose hold ended.
#[derive(Default)]
struct Parked {
    holding: Option<(Held, Instant, crate::metrics::HeldConnect)>,
    due: Vec<Held>,
    /// Numbers the connects parked, so that a batch's other replies join its own.
    count: u64,
    /// The bound client is gone: `next_push` answers `Closed` once `due` is sent.
    closed: bool,
}

/// A parked connect's reply, encoded (the outgoing extensions run when it is
/// sent), after the replies to the rest of its batch: Faye answers a frame in
/// one frame, once all of it is done.
struct Held {
    id: u64,
    before: Vec<Reply>,
    /// The reply's JSON object, at its exact size: it waits on every idle socket.
    reply: Option<Box<[u8]>>,
}

#[derive(Default)]
struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the socket next checks that its client still exists.
    check_at: Option<Instant>,
}

/// What woke a bound socket.
enum Wake {
    Flags(u8),
    Timer(Instant),
}

impl<E: Engine> Socket<E> {
    /// A remote client's socket, opened by `request`.
    pub(crate) fn remote(server: Server<E>, request: &RequestInfo) -> Self {
        Self::new(server, Some(KeptRequest::new(request)), false)
    }

    /// A socket for code in the process: no request, trusted.
    pub(crate) fn trusted(server: Server<E>) -> Self {
        Self::new(server, None, true)
    }

    fn new(server: Server<E>, request: Option<KeptRequest>, trusted: bool) -> Self {
        let transport = request.as_ref().map_or("in-process", |r| r.transport);
        Self {
            _open: crate::metrics::OpenSocket::start(transport),
            server,
            request,
            trusted,
            binding: Mutex::new(None),
            signal: Arc::default(),
            held: Mutex::new(None),
            parked: Mutex::default(),
            timer: Mutex::default(),
        }
    }

    /// The request that opened the socket (`None` for a trusted socket). The socket
    /// keeps its bytes and makes the `RequestInfo` on the first call.
    pub fn request(&self) -> Option<&Arc<RequestInfo>> {
        self.request.as_ref().map(KeptRequest::info)
    }

    /// How the socket's client arrived (`in-process` for a trusted socket),
    /// without making its request.
    pub(crate) fn transport(&self) -> &'static str {
        self.request.as_ref().map_or("in-process", |r| r.transport)
    }

    /// The peer's address, when the transport knew it.
    pub(crate) fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.request.as_ref().and_then(|r| r.remote_addr)
    }

    /// Whether batches on it are trusted: only sockets made by
    /// [`Server::trusted_socket`] are.
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    fn binding(&self) -> MutexGuard<'_, Option<(ClientId, Arc<Binding>)>> {
        self.binding.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
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
        let conn = Binding::socket(self.signal.clone());
        registry.bind(client, conn.clone());
        *binding = Some((client, conn.clone()));
        drop(binding);
        self.signal.raise(binding::REBOUND);
        conn
    }

    /// Starts holding a connect on this socket and answers the one held before it:
    /// every held connect is a future alive for the whole timeout, so a socket
    /// sending connects in a loop would otherwise pile them up without bound. A
    /// socket carries one client at a time, so this is also one per client, as for
    /// HTTP (see `Registry::bind`). The returned token is cancelled when the next
    /// connect on the socket supersedes this one.
    pub(crate) fn hold_next(&self) -> CancellationToken {
        self.release_parked();
        let next = CancellationToken::new();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = held.replace(next.clone()) {
            before.cancel();
        }
        next
    }

    /// Parks a held connect's `reply` on the socket for `hold`, answering the
    /// connect held before it (see [`Socket::hold_next`]). Returns its number,
    /// for [`Socket::join_parked`].
    pub(crate) fn park(&self, reply: &Message, hold: Duration) -> u64 {
        if let Some(before) = self.held.lock().unwrap_or_else(|e| e.into_inner()).take() {
            before.cancel();
        }
        let transport = self.transport();
        let mut parked = self.parked();
        parked.count += 1;
        let id = parked.count;
        let reply = EncodedMessage::new(reply).json().into();
        let held = Held { id, before: Vec::new(), reply: Some(reply) };
        let holding = (held, Instant::now() + hold, crate::metrics::HeldConnect::start(transport));
        if let Some((before, ..)) = parked.holding.replace(holding) {
            parked.due.push(before);
        }
        drop(parked);
        // Due now (the one before), or the timer must move to the new end.
        self.signal.raise(binding::DUE);
        id
    }

    /// The other replies of the batch that parked connect `id`: sent with its
    /// reply, before it, or at once if that went already.
    pub(crate) fn join_parked(&self, id: u64, replies: Vec<Reply>) {
        let mut parked = self.parked();
        let parked = &mut *parked;
        let held = parked.holding.iter_mut().map(|(held, ..)| held).chain(parked.due.iter_mut());
        match held.into_iter().find(|held| held.id == id) {
            Some(held) => held.before.extend(replies),
            None => {
                parked.due.push(Held { id, before: replies, reply: None });
                self.signal.raise(binding::DUE);
            }
        }
    }

    /// Ends the parked connect's hold: its reply is due.
    fn release_parked(&self) {
        let mut parked = self.parked();
        if let Some((reply, ..)) = parked.holding.take() {
            parked.due.push(reply);
        }
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

    /// Waits for the signal, or for the timer: set to the sooner of the client
    /// check (every `timeout`) and the parked connect's end.
    async fn wake(&self, timeout: Duration) -> Wake {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(flags) = self.signal.poll_take(cx) {
                return Poll::Ready(Wake::Flags(flags));
            }
            let hold_ends = self.parked().holding.as_ref().map(|(_, until, _)| *until);
            let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
            let check_at = *timer.check_at.get_or_insert_with(|| Instant::now() + timeout);
            let at = hold_ends.map_or(check_at, |until| until.min(check_at));
            let sleep = timer.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer(at));
            }
            Poll::Pending
        })
        .await
    }

    /// Waits while no client is bound: `None` once one is (or something else
    /// was raised), else what to push.
    async fn unbound(&self, timeout: Duration) -> Option<Push> {
        tokio::select! {
            // Mail raised with the binding is for the bound loop.
            flags = self.signal.wait() => {
                self.signal.put_back(flags & !binding::REBOUND);
                None
            }
            _ = self.server.shared.registry.shutdown.cancelled() => Some(Push::Closed),
            _ = tokio::time::sleep(timeout) => Some(Push::Unbound),
        }
    }

    /// `messages` through the outgoing extensions, for this socket's request.
    async fn outgoing(&self, messages: Vec<EncodedMessage>) -> Vec<EncodedMessage> {
        if !self.server.has_extensions() {
            return messages;
        }
        Box::pin(self.server.outgoing_deliveries(messages, self.request().map(|r| &**r))).await
    }

    /// Waits until there is something to push. Once the engine has handed over the
    /// client's messages they exist only in this future: poll it to completion rather
    /// than dropping it (keep it across `select!` turns).
    pub async fn next_push(&self) -> Push {
        let shutdown = &self.server.shared.registry.shutdown;
        let timeout = self.server.shared.options.timeout;
        loop {
            // One connect's frame at a time: each frame of the client's is
            // answered in a frame of its own.
            let (due, closed) = {
                let mut parked = self.parked();
                ((!parked.due.is_empty()).then(|| parked.due.remove(0)), parked.closed)
            };
            if let Some(held) = due {
                let mut replies = held.before;
                let reply = held.reply.map(|json| EncodedMessage::from_json(&json));
                let reply = self.outgoing(reply.into_iter().collect()).await;
                replies.extend(reply.into_iter().map(Reply::Delivery));
                if !replies.is_empty() {
                    return Push::Replies(replies);
                }
                continue;
            }
            if closed {
                return Push::Closed;
            }
            let Some((client, conn)) = self.binding().clone() else {
                // Boxed, as are the other rare waits below: a socket keeps this
                // future alive all its life, so its size is every socket's.
                match Box::pin(self.unbound(timeout)).await {
                    Some(push) => return push,
                    None => continue,
                }
            };
            match self.wake(timeout).await {
                Wake::Flags(flags) => {
                    if flags & binding::REBOUND != 0 {
                        // `conn` may be the binding before: look again, keeping
                        // what else was raised.
                        self.signal.put_back(flags & !binding::REBOUND);
                        continue;
                    }
                    if flags & binding::ENDED != 0 && conn.ended.is_cancelled() {
                        // The hold ends with the binding, whatever ended it.
                        self.release_parked();
                        if conn.client_closed() || shutdown.is_cancelled() {
                            self.parked().closed = true;
                            continue;
                        }
                        // Superseded by a newer binding for the same client: detach.
                        let mut binding = self.binding();
                        if binding.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, &conn)) {
                            *binding = None;
                        }
                        continue;
                    }
                    if flags & binding::MAIL != 0 {
                        // No yield to gather more first: it costs a scheduler round
                        // trip per push, and under load a socket that runs late finds
                        // several messages queued anyway, which then go out as one frame.
                        match self.server.engine().take_queue(&client, None).await {
                            Ok(messages) if !messages.is_empty() => {
                                let messages = self.outgoing(messages).await;
                                if !messages.is_empty() {
                                    crate::metrics::delivered(messages.len());
                                    return Push::Messages(messages);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(client = client.log_tag(), error = %e, "could not read the queue");
                            }
                        }
                    }
                }
                Wake::Timer(at) => {
                    {
                        let mut parked = self.parked();
                        if parked.holding.as_ref().is_some_and(|(_, until, _)| *until <= at) {
                            let (reply, ..) = parked.holding.take().expect("checked");
                            parked.due.push(reply);
                        }
                    }
                    let check = {
                        let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
                        let due = timer.check_at.is_some_and(|check_at| check_at <= at);
                        if due {
                            timer.check_at = Some(Instant::now() + timeout);
                        }
                        due
                    };
                    // The client's end normally arrives as an engine event; one that
                    // never does (the client was destroyed between `attach` finding
                    // it and the binding, or by another server sharing the engine)
                    // would leave the socket open forever, so a socket checks every
                    // timeout.
                    if check
                        && let Ok(false) =
                            Box::pin(self.server.engine().client_exists(&client)).await
                    {
                        self.release_parked();
                        self.parked().closed = true;
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
