//! Bindings: how each client is reached right now, a held long-poll
//! `/meta/connect` or a socket.
//!
//! The engine tells the [`Registry`] that a client has mail; the registry wakes that
//! client's binding, which drains the engine queue into one reply or one frame.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use faye_engine::{ClientId, EngineEvent, EngineListener};

use crate::cow_list::CowList;
use crate::monitor::{Event, Listener};
use crate::order::Sequencer;
use crate::rate::Limiter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One binding of a client to a way of reaching it.
pub(crate) struct Binding {
    /// Signalled when the engine has queued messages for the client.
    pub(crate) mail: Notify,
    /// Cancelled when the binding ends: replaced by a newer one, the client was
    /// destroyed, or the server is shutting down.
    pub(crate) ended: CancellationToken,
    /// Set before `ended` is cancelled when the client itself is gone.
    closed: Mutex<bool>,
    /// A persistent socket (WebSocket, EventSource) rather than a held request.
    pub(crate) socket: bool,
}

impl Binding {
    pub(crate) fn new(socket: bool) -> Arc<Self> {
        Arc::new(Self {
            mail: Notify::new(),
            ended: CancellationToken::new(),
            closed: Mutex::new(false),
            socket,
        })
    }

    fn end(&self, client_closed: bool) {
        if client_closed {
            *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
        self.ended.cancel();
    }

    /// Whether the binding ended because the client's session was destroyed.
    pub(crate) fn client_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// clientId → its current connection. At most one per client: binding a new one
/// ends the old one, so an earlier held connect is answered instead of orphaned.
#[derive(Default)]
pub(crate) struct Registry {
    bindings: papaya::HashMap<ClientId, Arc<Binding>>,
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
        binding.mail.notify_one();
        if let Some(old) = self.bindings.pin().insert(client, binding) {
            old.end(false);
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
            binding.mail.notify_one();
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
