//! Bindings: how each client is reached right now, a held long-poll
//! `/meta/connect` or a socket.
//!
//! The engine tells the [`Registry`] that a client has mail; the registry wakes that
//! client's binding, which drains the engine queue into one reply or one frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::Poll;

use faye_engine::{ClientId, EngineEvent, EngineListener};

use crate::cow_list::CowList;
use crate::monitor::{Event, Listener};
use crate::order::Sequencer;
use crate::rate::Limiter;
use futures_util::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

/// What a binding's waiter is woken for: flags raised since it last looked, and
/// the one task waiting. Cheaper than a `Notify` per cause: a raise is an atomic
/// `or` and a wake, and the waiter registers once per wait whatever it waits for.
/// A socket shares one between its bindings and itself (see `Socket`).
#[derive(Default)]
pub(crate) struct Signal {
    flags: AtomicU8,
    waker: AtomicWaker,
}

/// The engine queued messages for the client.
pub(crate) const MAIL: u8 = 1;
/// The binding ended (see [`Binding::ended`]).
pub(crate) const ENDED: u8 = 2;
/// The socket was bound to a client.
pub(crate) const REBOUND: u8 = 4;
/// A connect the socket held is due for its reply.
pub(crate) const DUE: u8 = 8;

impl Signal {
    pub(crate) fn raise(&self, flags: u8) {
        self.flags.fetch_or(flags, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Raises `flags` again, without a wake: for a waiter that took them too
    /// early and is about to look again.
    pub(crate) fn put_back(&self, flags: u8) {
        if flags != 0 {
            self.flags.fetch_or(flags, Ordering::AcqRel);
        }
    }

    /// The flags raised since the last call, or `Pending` (with the task
    /// registered to be woken) if none were.
    pub(crate) fn poll_take(&self, cx: &mut std::task::Context<'_>) -> Poll<u8> {
        let flags = self.flags.swap(0, Ordering::AcqRel);
        if flags != 0 {
            return Poll::Ready(flags);
        }
        self.waker.register(cx.waker());
        match self.flags.swap(0, Ordering::AcqRel) {
            0 => Poll::Pending,
            flags => Poll::Ready(flags),
        }
    }

    /// Waits for flags to be raised; returns them.
    pub(crate) async fn wait(&self) -> u8 {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }
}

/// One binding of a client to a way of reaching it.
pub(crate) struct Binding {
    /// Raised with [`MAIL`] when the engine has queued messages for the client,
    /// and with [`ENDED`] when the binding ends.
    pub(crate) signal: Arc<Signal>,
    /// Cancelled when the binding ends: replaced by a newer one, the client was
    /// destroyed, or the server is shutting down.
    pub(crate) ended: CancellationToken,
    /// Set before `ended` is cancelled when the client itself is gone.
    closed: AtomicBool,
    /// A persistent socket (WebSocket, EventSource) rather than a held request.
    pub(crate) socket: bool,
}

impl Binding {
    /// A held request's binding, with a signal of its own.
    pub(crate) fn request() -> Arc<Self> {
        Self::new(Arc::default(), false)
    }

    /// A socket's binding, raising the socket's `signal`.
    pub(crate) fn socket(signal: Arc<Signal>) -> Arc<Self> {
        Self::new(signal, true)
    }

    fn new(signal: Arc<Signal>, socket: bool) -> Arc<Self> {
        Arc::new(Self {
            signal,
            ended: CancellationToken::new(),
            closed: AtomicBool::new(false),
            socket,
        })
    }

    /// The engine has messages for the client.
    pub(crate) fn mail(&self) {
        self.signal.raise(MAIL);
    }

    fn end(&self, client_closed: bool) {
        if client_closed {
            self.closed.store(true, Ordering::Release);
        }
        self.ended.cancel();
        self.signal.raise(ENDED);
    }

    /// Whether the binding ended because the client's session was destroyed.
    pub(crate) fn client_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// clientId → its current connection. At most one per client: binding a new one
/// ends the old one, so an earlier held connect is answered instead of orphaned.
#[derive(Default)]
pub(crate) struct Registry {
    bindings: papaya::HashMap<ClientId, Arc<Binding>, foldhash::fast::RandomState>,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Monitoring callbacks; engine events reach them through here.
    pub(crate) monitors: CowList<Listener>,
    /// Each client's messages applied in the order it sent them.
    pub(crate) order: Sequencer,
    /// Publish rate limits, when configured.
    pub(crate) rates: Limiter,
    /// Live clients, as the engine's handshake and disconnect events count them.
    clients: AtomicUsize,
}

impl Registry {
    /// Binds `binding` to `client`, ending any previous binding. Mail already queued is
    /// signalled so the new connection drains it at once.
    pub(crate) fn bind(&self, client: ClientId, binding: Arc<Binding>) {
        binding.mail();
        if let Some(old) = self.bindings.pin().insert(client, binding.clone()) {
            old.end(false);
        }
        // Made after shutdown began, so `close_all` did not see it: its waiter
        // need not watch for shutdown itself.
        if self.shutdown.is_cancelled() {
            binding.end(false);
        }
    }

    /// Whether `client` is bound to a socket.
    pub(crate) fn has_socket(&self, client: &ClientId) -> bool {
        self.bindings.pin().get(client).is_some_and(|c| c.socket && !c.ended.is_cancelled())
    }

    /// Removes the binding if it is still `binding` (a newer one may have replaced it).
    pub(crate) fn unbind(&self, client: &ClientId, binding: &Arc<Binding>) {
        let _ = self.bindings.pin().remove_if(client, |_, cur| Arc::ptr_eq(cur, binding));
    }

    /// How many clients are alive.
    pub(crate) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Calls the monitoring listeners; the event is built only if there are any.
    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        let monitors = self.monitors.snapshot();
        if !monitors.is_empty() {
            let event = event();
            for listener in monitors.iter() {
                listener(&event);
            }
        }
    }

    /// Ends every binding (server shutdown).
    pub(crate) fn close_all(&self) {
        self.shutdown.cancel();
        let bindings = self.bindings.pin();
        for (_, binding) in bindings.iter() {
            binding.end(false);
        }
        bindings.clear();
    }
}

impl EngineListener for Registry {
    fn mail(&self, client: &ClientId) {
        if let Some(binding) = self.bindings.pin().get(client) {
            binding.mail();
        }
    }

    fn mail_all(&self, clients: &[ClientId]) {
        let bindings = self.bindings.pin();
        for client in clients {
            if let Some(binding) = bindings.get(client) {
                binding.mail();
            }
        }
    }

    fn event(&self, event: EngineEvent) {
        tracing::debug!(?event, "engine event");
        let close = match event {
            EngineEvent::Close(client) => Some(client),
            _ => None,
        };
        match event {
            EngineEvent::Handshake(_) => {
                self.clients.fetch_add(1, Ordering::Relaxed);
            }
            EngineEvent::Disconnect(_) => {
                let _ = self.clients.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
            }
            _ => {}
        }
        crate::metrics::engine_event(&event, self.clients.load(Ordering::Relaxed));
        if let Some(event) = Event::from_engine(event) {
            self.emit(|| event);
        }
        if let Some(client) = close {
            self.order.end(&client);
            self.rates.end(&client);
            if let Some(binding) = self.bindings.pin().remove(&client) {
                binding.end(true);
            }
        }
    }
}

/// Removes a binding when the request or socket holding it goes away.
pub(crate) struct BindingGuard<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) client: ClientId,
    pub(crate) binding: Arc<Binding>,
}

impl Drop for BindingGuard<'_> {
    fn drop(&mut self) {
        self.registry.unbind(&self.client, &self.binding);
    }
}
