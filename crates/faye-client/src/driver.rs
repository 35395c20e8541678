//! The background task behind a [`Client`](crate::Client): it owns the session
//! (client id, subscriptions, messages waiting for replies), opens transports,
//! handshakes, runs the `/meta/connect` cycle, follows the server's advice, and
//! reconnects with backoff.
//!
//! Handles talk to it through [`Command`]s; it changes its state only here, one
//! command or event at a time, so no lock is held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faye_protocol::{Channel, Message, ReceivedMessage};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::transport::{Event, Lane, Transport};
use crate::{ConnectionState, Error, Extension, Reason, Shared, TransportKind};

/// What a handle asks of the driver.
pub(crate) enum Command {
    Connect(oneshot::Sender<Result<(), Error>>),
    Subscribe { channel: String, listener: Listener, reply: oneshot::Sender<Result<(), Error>> },
    Unsubscribe { channel: String, listener: u64 },
    Publish { message: Box<Message>, reply: oneshot::Sender<Result<Message, Error>> },
    Disconnect(oneshot::Sender<()>),
    Reconnect,
}

/// The sending side of one subscription.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<ReceivedMessage>,
    pub(crate) behind: Arc<AtomicBool>,
}

/// One channel the client is subscribed to, however many subscriptions share it.
#[derive(Debug, Default)]
struct Chan {
    listeners: Vec<Listener>,
    /// The server has acknowledged the subscription in this session.
    active: bool,
    /// The id of the `/meta/subscribe` that will make it active, while one is
    /// queued or sent: only its reply settles the channel.
    subscribing: Option<u64>,
    /// Subscribe calls waiting for the server's acknowledgement.
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
}

/// What a message is, to know what its reply settles.
enum Kind {
    Connect,
    Subscribe(String),
    Unsubscribe,
    Publish(oneshot::Sender<Result<Message, Error>>),
}

/// A message and its purpose; `message` has no `clientId` until it is sent.
struct Outgoing {
    /// The driver's own name for it.
    key: u64,
    /// Its `id` on the wire, given when it is first sent (so ids leave in
    /// sequence: faye-rs applies a client's messages in id order, and waits for
    /// a missing one), and kept when it is sent again.
    wire: Option<u64>,
    message: Message,
    kind: Kind,
}

/// A message sent and not answered yet.
struct Sent {
    out: Outgoing,
    at: Instant,
}

/// Why a connected session ended.
enum End {
    /// The transport failed: reconnect (with backoff), same client id.
    Lost(Reason),
    /// The server forgot the client: handshake again and resubscribe.
    Rehandshake,
    /// Stop: disconnected, or advised to.
    Stop(Reason),
    /// Every handle is gone.
    Closed,
}

/// The server's advice, as last given.
#[derive(Debug, Clone)]
struct Advice {
    interval: Duration,
    timeout: Duration,
}

/// The driver's tunables.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) retry: Duration,
    pub(crate) max_retry: Duration,
    pub(crate) timeout: Duration,
}

/// Most messages waiting to be sent (while the connection is down, say); past
/// it a publish fails at once with [`Error::Backlog`].
pub(crate) const MAX_WAITING: usize = 100_000;

/// Most messages in one WebSocket frame or one HTTP request.
const MAX_BATCH: usize = 100;

/// How long replies still due are waited for once the server has forgotten the
/// session.
const GRACE: Duration = Duration::from_secs(2);

/// How long a goodbye (`/meta/disconnect`) may take.
const GOODBYE: Duration = Duration::from_secs(5);

pub(crate) struct Driver {
    shared: Arc<Shared>,
    tuning: Tuning,
    state: watch::Sender<ConnectionState>,
    client_id: Option<String>,
    channels: HashMap<String, Chan>,
    outbox: VecDeque<Outgoing>,
    sent: BTreeMap<u64, Sent>,
    /// Messages the server refused for not knowing the client, by id: sent
    /// again, in order, once it knows the client again.
    refused: BTreeMap<u64, Outgoing>,
    counter: u64,
    keys: u64,
    advice: Advice,
    connect_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    disconnect_waiters: Vec<oneshot::Sender<()>>,
    stop: Option<Reason>,
    reconnect_now: bool,
    /// Long-polling: a request of [`Lane::Other`] is out.
    busy: bool,
    /// The id of the `/meta/connect` in flight.
    connecting: Option<u64>,
    /// The current connection has had a connect answered successfully.
    healthy: bool,
}

/// Message ids as Faye writes them: a counter in base 36.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn parse_id(id: &Value) -> Option<u64> {
    u64::from_str_radix(id.as_str()?, 36).ok()
}

/// The error of a refused message.
fn rejected(message: &Message) -> Error {
    Error::Rejected(message.error.clone().unwrap_or_else(|| "refused without an error".into()))
}

/// A Bayeux error saying the server does not know the client (`401::...`).
fn unknown_client(error: Option<&str>) -> bool {
    error.is_some_and(|e| e.starts_with("401:"))
}

async fn pipe(
    extensions: &[Arc<dyn Extension>],
    mut message: Message,
    outgoing: bool,
) -> Option<Message> {
    for ext in extensions {
        message =
            if outgoing { ext.outgoing(message).await? } else { ext.incoming(message).await? };
    }
    Some(message)
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        tuning: Tuning,
        state: watch::Sender<ConnectionState>,
    ) -> Self {
        let advice = Advice { interval: Duration::ZERO, timeout: tuning.timeout };
        Self {
            shared,
            tuning,
            state,
            client_id: None,
            channels: HashMap::new(),
            outbox: VecDeque::new(),
            sent: BTreeMap::new(),
            refused: BTreeMap::new(),
            counter: 0,
            keys: 0,
            advice,
            connect_waiters: Vec::new(),
            disconnect_waiters: Vec::new(),
            stop: None,
            reconnect_now: false,
            busy: false,
            connecting: None,
            healthy: false,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn extensions(&self) -> Vec<Arc<dyn Extension>> {
        crate::lock(&self.shared.extensions).clone()
    }

    fn set_client_id(&mut self, id: Option<String>) {
        self.client_id.clone_from(&id);
        *crate::lock(&self.shared.client_id) = id;
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    /// How long a message may wait for its reply: Faye's 1.2 × the advised
    /// timeout, and at least the timeout plus 5 s (a held connect takes all of it).
    fn request_timeout(&self) -> Duration {
        let t = self.advice.timeout;
        (t.mul_f64(1.2)).max(t + Duration::from_secs(5))
    }

    /// Whether anything needs a connection.
    fn wanted(&self) -> bool {
        !self.outbox.is_empty() || !self.connect_waiters.is_empty() || !self.channels.is_empty()
    }

    /// The driver's life: idle until something needs a connection, then a
    /// session until it is disconnected.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            while !self.wanted() || self.stop.is_some() {
                if let Some(reason) = self.stop.take() {
                    self.finish(&reason);
                }
                let Some(cmd) = rx.recv().await else { return };
                self.command(cmd);
            }
            if self.session(&mut rx).await {
                return;
            }
        }
    }

    /// Applies a command; no I/O.
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect(reply) => {
                if matches!(*self.state.borrow(), ConnectionState::Connected { .. }) {
                    let _ = reply.send(Ok(()));
                } else {
                    self.connect_waiters.push(reply);
                }
            }
            Command::Subscribe { channel, listener, reply } => {
                let key = self.next_key();
                let chan = self.channels.entry(channel.clone()).or_default();
                chan.listeners.retain(|l| !l.tx.is_closed());
                chan.listeners.push(listener);
                if chan.active {
                    let _ = reply.send(Ok(()));
                } else {
                    chan.waiters.push(reply);
                    // One /meta/subscribe per channel, however many subscribe at once.
                    if chan.subscribing.is_none() {
                        chan.subscribing = Some(key);
                        let message = meta("/meta/subscribe", Some(&channel));
                        let kind = Kind::Subscribe(channel);
                        self.outbox.push_back(Outgoing { key, wire: None, message, kind });
                    }
                }
            }
            Command::Unsubscribe { channel, listener } => {
                let Some(chan) = self.channels.get_mut(&channel) else { return };
                chan.listeners.retain(|l| l.id != listener && !l.tx.is_closed());
                if chan.listeners.is_empty() {
                    let chan = self.channels.remove(&channel).unwrap_or_default();
                    for w in chan.waiters {
                        let _ = w.send(Err(Error::Disconnected(Reason::Requested)));
                    }
                    // A subscribe not sent yet is simply not sent; otherwise the
                    // server is told, after the subscribe.
                    let unsent = |o: &Outgoing| Some(o.key) == chan.subscribing && o.wire.is_none();
                    if self.outbox.iter().any(unsent) {
                        self.outbox.retain(|o| !unsent(o));
                    } else if self.client_id.is_some() {
                        self.enqueue(meta("/meta/unsubscribe", Some(&channel)), Kind::Unsubscribe);
                    }
                }
            }
            Command::Publish { message, reply } => {
                if self.outbox.len() >= MAX_WAITING {
                    // Publishes whose callers gave up go first.
                    self.outbox.retain(|o| !matches!(&o.kind, Kind::Publish(r) if r.is_closed()));
                }
                if self.outbox.len() >= MAX_WAITING {
                    let _ = reply.send(Err(Error::Backlog(MAX_WAITING)));
                } else {
                    self.enqueue(*message, Kind::Publish(reply));
                }
            }
            Command::Disconnect(reply) => {
                self.disconnect_waiters.push(reply);
                self.stop = Some(Reason::Requested);
            }
            Command::Reconnect => self.reconnect_now = true,
        }
    }

    fn enqueue(&mut self, message: Message, kind: Kind) {
        let key = self.next_key();
        self.outbox.push_back(Outgoing { key, wire: None, message, kind });
    }

    fn next_key(&mut self) -> u64 {
        self.keys += 1;
        self.keys
    }

    /// One session: connect, stay connected, reconnect, until stopped. True when
    /// every handle is gone.
    async fn session(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) -> bool {
        let mut reason: Option<Reason> = None;
        let mut failures: u32 = 0;
        loop {
            if let Some(stop) = self.stop.take() {
                self.finish(&stop);
                return false;
            }
            self.reconnect_now = false;
            self.set_state(match &reason {
                None => ConnectionState::Connecting,
                Some(r) => ConnectionState::Reconnecting(r.clone()),
            });
            // An id for the handshake only if there will be one: a skipped id
            // would be a hole for the server to wait on.
            let hs_id = if self.client_id.is_none() { self.next_id() } else { 0 };
            let establish = establish(
                self.shared.clone(),
                self.extensions(),
                self.client_id.clone(),
                hs_id,
                self.request_timeout(),
            );
            tokio::pin!(establish);
            let result = loop {
                tokio::select! {
                    r = &mut establish => break Some(r),
                    cmd = rx.recv() => match cmd {
                        None => return true,
                        Some(cmd) => {
                            self.command(cmd);
                            if self.stop.is_some() {
                                break None;
                            }
                        }
                    },
                }
            };
            let Some(result) = result else { continue };
            match result {
                Ok(est) => {
                    if let Some((id, advice)) = est.handshake {
                        self.set_client_id(Some(id));
                        if let Some(advice) = advice {
                            self.apply_advice(&advice);
                        }
                        self.resubscribe();
                    }
                    let transport = est.transport;
                    tracing::debug!(transport = %transport.kind, "connected");
                    self.set_state(ConnectionState::Connected { transport: transport.kind });
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                    self.healthy = false;
                    let end = self.connected(transport, rx).await;
                    // Only a connection that worked (a connect answered) resets
                    // the backoff: a server that takes connections and then
                    // drops or forgets them at once is not retried in a loop.
                    if self.healthy {
                        failures = 0;
                    }
                    let lost = match end {
                        End::Closed => return true,
                        End::Stop(r) => {
                            self.stop = Some(r);
                            continue;
                        }
                        End::Rehandshake => {
                            self.set_client_id(None);
                            Reason::SessionLost
                        }
                        End::Lost(r) => r,
                    };
                    self.requeue();
                    failures += 1;
                    reason = Some(lost);
                    // The first time at once; then with backoff.
                    if failures > 1 && self.pause(rx, self.backoff(failures - 1)).await {
                        return true;
                    }
                }
                Err(Failure::Network(e)) => {
                    failures += 1;
                    tracing::debug!(error = %e, failures, "could not connect");
                    reason = Some(Reason::Network(e.to_string()));
                    if self.pause(rx, self.backoff(failures)).await {
                        return true;
                    }
                }
                Err(Failure::Rejected(e)) => {
                    self.fail_all(&Error::Rejected(e.clone()));
                    self.stop = Some(Reason::HandshakeRejected(e));
                }
                Err(Failure::NoTransport(e)) => {
                    self.fail_all(&Error::NoTransport(e));
                    self.stop = Some(Reason::Network("no usable transport".into()));
                }
            }
        }
    }

    /// The wait before reconnection attempt `n` (from 1): exponential from
    /// `retry` up to `max_retry`, with jitter (a random half to all of it), so a
    /// restarted server is not met by every client at once.
    fn backoff(&self, n: u32) -> Duration {
        let base = self.tuning.retry.max(self.advice.interval);
        let full = base.saturating_mul(1 << n.min(16).saturating_sub(1)).min(self.tuning.max_retry);
        full.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Waits `d`, handling commands meanwhile; true when every handle is gone.
    /// Returns early for a disconnect or a reconnect by hand.
    async fn pause(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>, d: Duration) -> bool {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                cmd = rx.recv() => match cmd {
                    None => return true,
                    Some(cmd) => {
                        self.command(cmd);
                        if self.stop.is_some() || self.reconnect_now {
                            return false;
                        }
                    }
                },
            }
        }
    }

    /// Connected: flushes the outbox, keeps one `/meta/connect` out, handles
    /// replies and deliveries, until the transport fails or the session ends.
    async fn connected(
        &mut self,
        mut transport: Transport,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> End {
        self.busy = false;
        self.connecting = None;
        let mut connect_at = Some(Instant::now());
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // Once the server has forgotten the session: when to stop waiting for
        // the replies still due on this transport. Those are settled first (a
        // server may have accepted them: Faye takes publishes from unknown
        // clients), so that only what it refused is sent again, under the new
        // session, rather than everything in flight twice.
        let mut forgotten: Option<Instant> = None;
        loop {
            if let Some(reason) = self.stop.take() {
                if reason == Reason::Requested && forgotten.is_none() {
                    self.goodbye(&mut transport).await;
                }
                return End::Stop(reason);
            }
            if let Some(deadline) = forgotten {
                let waiting = self.sent.values().any(|s| !matches!(s.out.kind, Kind::Connect));
                if !waiting || Instant::now() >= deadline {
                    return End::Rehandshake;
                }
            } else {
                if self.reconnect_now {
                    return End::Lost(Reason::ReconnectRequested);
                }
                self.flush(&mut transport).await;
                if self.connecting.is_none() && connect_at.is_some_and(|at| at <= Instant::now()) {
                    connect_at = None;
                    self.send_connect(&mut transport).await;
                }
            }
            let wake = match forgotten {
                Some(deadline) => Some(deadline),
                None => connect_at.filter(|_| self.connecting.is_none()),
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => {
                        if forgotten.is_none() {
                            self.goodbye(&mut transport).await;
                        }
                        return End::Closed;
                    }
                    Some(cmd) => {
                        self.command(cmd);
                        // What else is waiting joins it, so a burst leaves in
                        // few frames or requests.
                        for _ in 0..MAX_BATCH {
                            let Ok(cmd) = rx.try_recv() else { break };
                            self.command(cmd);
                        }
                    }
                },
                event = transport.events.recv() => match event {
                    None if forgotten.is_some() => return End::Rehandshake,
                    None => return End::Lost(Reason::Network("the transport stopped".into())),
                    Some(Event::Messages(lane, messages)) => {
                        if lane == Lane::Other && transport.kind == TransportKind::LongPolling {
                            self.busy = false;
                        }
                        for message in messages {
                            match self.receive(message).await {
                                Received::Nothing => {}
                                Received::ConnectDone(ok) => {
                                    self.healthy |= ok;
                                    let wait = if ok { self.advice.interval } else { self.tuning.retry };
                                    connect_at = Some(Instant::now() + wait);
                                }
                                Received::End(End::Rehandshake) => {
                                    forgotten.get_or_insert(Instant::now() + GRACE);
                                }
                                Received::End(end) => return end,
                            }
                        }
                    }
                    Some(Event::Failed(_) | Event::Closed(_)) if forgotten.is_some() => {
                        return End::Rehandshake;
                    }
                    Some(Event::Failed(e) | Event::Closed(e)) => {
                        tracing::debug!(transport = %transport.kind, error = %e, "transport lost");
                        return End::Lost(Reason::Network(e));
                    }
                },
                () = sleep_until(wake) => {}
                _ = tick.tick() => {
                    let limit = self.request_timeout();
                    if self.sent.values().any(|s| s.at.elapsed() > limit) {
                        return End::Lost(Reason::Network(format!("no reply within {limit:?}")));
                    }
                }
            }
        }
    }

    /// Sends what the outbox holds: all of it over a WebSocket (in order on the
    /// socket), one batch at a time over long-polling (the next leaves when the
    /// last is answered, so no request overtakes another).
    async fn flush(&mut self, transport: &mut Transport) {
        let Some(client_id) = self.client_id.clone() else { return };
        let extensions = self.extensions();
        while !self.outbox.is_empty() {
            if transport.kind == TransportKind::LongPolling && self.busy {
                return;
            }
            let mut batch = Vec::new();
            while batch.len() < MAX_BATCH {
                let Some(mut out) = self.outbox.pop_front() else { break };
                if let Kind::Publish(reply) = &out.kind
                    && reply.is_closed()
                {
                    // Its caller stopped waiting (a deadline): not sent at all.
                    continue;
                }
                let id = match out.wire {
                    Some(id) => id,
                    None => self.next_id(),
                };
                out.wire = Some(id);
                let mut message = out.message.clone();
                message.id = Some(json!(base36(id)));
                message.client_id = Some(client_id.clone());
                match pipe(&extensions, message, true).await {
                    Some(message) => {
                        batch.push(message);
                        self.sent.insert(id, Sent { out, at: Instant::now() });
                    }
                    None => self.settle(out.key, out.kind, Err(Error::NoReply)),
                }
            }
            if batch.is_empty() {
                continue;
            }
            transport.send(Lane::Other, &batch, self.request_timeout());
            if transport.kind == TransportKind::LongPolling {
                self.busy = true;
            }
        }
    }

    async fn send_connect(&mut self, transport: &mut Transport) {
        let Some(client_id) = self.client_id.clone() else { return };
        let id = self.next_id();
        let message = Message {
            id: Some(json!(base36(id))),
            client_id: Some(client_id),
            connection_type: Some(transport.kind.name().to_owned()),
            ..Message::on("/meta/connect")
        };
        let key = self.next_key();
        let out = Outgoing { key, wire: Some(id), message: message.clone(), kind: Kind::Connect };
        let Some(message) = pipe(&self.extensions(), message, true).await else { return };
        self.sent.insert(id, Sent { out, at: Instant::now() });
        self.connecting = Some(id);
        transport.send(Lane::Connect, &[message], self.request_timeout());
    }

    /// One message from the server.
    async fn receive(&mut self, message: Message) -> Received {
        let Some(message) = pipe(&self.extensions(), message, false).await else {
            return Received::Nothing;
        };
        if let Some(advice) = &message.advice {
            self.apply_advice(advice);
        }
        if message.successful.is_none() {
            self.deliver(&message);
            return Received::Nothing;
        }
        let Some(sent) =
            message.id.as_ref().and_then(parse_id).and_then(|id| self.sent.remove(&id))
        else {
            return Received::Nothing;
        };
        let ok = message.successful == Some(true);
        // The advice of this reply (Faye acts on each reply's own advice).
        let advised =
            message.advice.as_ref().and_then(|a| a.get("reconnect")).and_then(Value::as_str);
        if advised == Some("none") {
            let result = if ok { Ok(message.clone()) } else { Err(rejected(&message)) };
            self.settle(sent.out.key, sent.out.kind, result);
            return Received::End(End::Stop(Reason::AdviceNone));
        }
        let lost =
            !ok && (unknown_client(message.error.as_deref()) || advised == Some("handshake"));
        match sent.out.kind {
            Kind::Connect => {
                self.connecting = None;
                if lost {
                    return Received::End(End::Rehandshake);
                }
                Received::ConnectDone(ok)
            }
            kind @ (Kind::Subscribe(_) | Kind::Publish(_)) if lost => {
                // Sent again, under the new client id, once handshaken.
                let id = sent.out.wire.unwrap_or_default();
                self.refused.insert(id, Outgoing { kind, ..sent.out });
                Received::End(End::Rehandshake)
            }
            kind => {
                let result = if ok { Ok(message) } else { Err(rejected(&message)) };
                self.settle(sent.out.key, kind, result);
                Received::Nothing
            }
        }
    }

    /// Settles what a message's reply (or its failure) settles.
    fn settle(&mut self, key: u64, kind: Kind, result: Result<Message, Error>) {
        match kind {
            Kind::Publish(reply) => {
                let _ = reply.send(result);
            }
            Kind::Subscribe(channel) => {
                let Some(chan) = self.channels.get_mut(&channel) else { return };
                if chan.subscribing != Some(key) {
                    // A subscribe the channel no longer waits for (it was
                    // unsubscribed and subscribed again since).
                    return;
                }
                chan.subscribing = None;
                match result {
                    Ok(_) => {
                        chan.active = true;
                        for w in chan.waiters.drain(..) {
                            let _ = w.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        // Its subscriptions end.
                        let chan = self.channels.remove(&channel).unwrap_or_default();
                        for w in chan.waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
            }
            Kind::Connect | Kind::Unsubscribe => {}
        }
    }

    /// Hands a published message to the subscriptions it matches, never waiting
    /// for one: a subscription [`SUBSCRIPTION_BUFFER`](crate::SUBSCRIPTION_BUFFER)
    /// messages behind is ended.
    fn deliver(&mut self, message: &Message) {
        let (Some(name), Some(data)) = (&message.channel, &message.data) else { return };
        let Some(channel) = Channel::parse(name) else { return };
        for key in &channel.expand() {
            let Some(chan) = self.channels.get_mut(key) else { continue };
            chan.listeners.retain(|l| {
                let received = ReceivedMessage { channel: name.clone(), data: data.clone() };
                match l.tx.try_send(received) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(channel = %key, "a subscription fell behind: ending it");
                        l.behind.store(true, Ordering::Relaxed);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
    }

    fn apply_advice(&mut self, advice: &Value) {
        let ms = |key: &str| {
            advice
                .get(key)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| Duration::from_secs_f64((v / 1000.0).min(86_400.0)))
        };
        if let Some(i) = ms("interval") {
            self.advice.interval = i;
        }
        if let Some(t) = ms("timeout") {
            self.advice.timeout = t;
        }
    }

    /// Every sent and unanswered message goes back to the front of the outbox,
    /// in its original order (connects are not resent: a new one is sent).
    fn requeue(&mut self) {
        let mut again = std::mem::take(&mut self.refused);
        for (id, s) in std::mem::take(&mut self.sent) {
            if !matches!(s.out.kind, Kind::Connect) {
                again.insert(id, s.out);
            }
        }
        for (_, out) in again.into_iter().rev() {
            self.outbox.push_front(out);
        }
        self.connecting = None;
        self.busy = false;
    }

    /// After a new handshake: every channel with subscriptions is subscribed
    /// again, first thing; unsubscribes of the old session are moot.
    fn resubscribe(&mut self) {
        self.outbox.retain(|o| !matches!(o.kind, Kind::Subscribe(_) | Kind::Unsubscribe));
        // A new session: what waits gets ids in its sequence.
        for out in &mut self.outbox {
            out.wire = None;
        }
        let mut channels: Vec<String> = Vec::new();
        for (name, chan) in &mut self.channels {
            chan.listeners.retain(|l| !l.tx.is_closed() && !l.behind.load(Ordering::Relaxed));
            if !chan.listeners.is_empty() || !chan.waiters.is_empty() {
                chan.active = false;
                channels.push(name.clone());
            }
        }
        self.channels.retain(|_, c| !c.listeners.is_empty() || !c.waiters.is_empty());
        channels.sort();
        // Pushed to the front in reverse: they leave in name order, first.
        for channel in channels.into_iter().rev() {
            let key = self.next_key();
            if let Some(chan) = self.channels.get_mut(&channel) {
                chan.subscribing = Some(key);
            }
            let message = meta("/meta/subscribe", Some(&channel));
            let kind = Kind::Subscribe(channel);
            self.outbox.push_front(Outgoing { key, wire: None, message, kind });
        }
    }

    /// Says goodbye to the server (`/meta/disconnect`), waiting a little for its
    /// answer.
    async fn goodbye(&mut self, transport: &mut Transport) {
        let Some(client_id) = self.client_id.clone() else { return };
        let id = self.next_id();
        let message = Message {
            id: Some(json!(base36(id))),
            client_id: Some(client_id),
            ..Message::on("/meta/disconnect")
        };
        let Some(message) = pipe(&self.extensions(), message, true).await else { return };
        transport.send(Lane::Connect, &[message], GOODBYE);
        let wait = async {
            while let Some(event) = transport.events.recv().await {
                match event {
                    Event::Messages(_, messages) => {
                        if messages.iter().any(|m| m.id.as_ref().and_then(parse_id) == Some(id)) {
                            return;
                        }
                    }
                    Event::Failed(_) | Event::Closed(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(GOODBYE, wait).await;
    }

    /// The session is over: everything waiting fails with `reason`, and every
    /// subscription ends.
    fn finish(&mut self, reason: &Reason) {
        self.fail_all(&Error::Disconnected(reason.clone()));
        self.channels.clear();
        self.set_client_id(None);
        self.set_state(ConnectionState::Disconnected(reason.clone()));
        for w in self.disconnect_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn fail_all(&mut self, error: &Error) {
        let sent = std::mem::take(&mut self.sent).into_values().map(|s| s.out);
        let refused = std::mem::take(&mut self.refused).into_values();
        let queued: Vec<Outgoing> = self.outbox.drain(..).collect();
        for out in sent.chain(refused).chain(queued) {
            self.settle(out.key, out.kind, Err(error.clone()));
        }
        for chan in self.channels.values_mut() {
            for w in chan.waiters.drain(..) {
                let _ = w.send(Err(error.clone()));
            }
        }
        for w in self.connect_waiters.drain(..) {
            let _ = w.send(Err(error.clone()));
        }
        self.connecting = None;
        self.busy = false;
    }
}

enum Received {
    Nothing,
    ConnectDone(bool),
    End(End),
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn meta(channel: &str, subscription: Option<&str>) -> Message {
    Message { subscription: subscription.map(|s| json!(s)), ..Message::on(channel) }
}

/// A transport, and the session's id and advice if it had to handshake.
struct Established {
    transport: Transport,
    handshake: Option<(String, Option<Value>)>,
}

enum Failure {
    Network(Error),
    Rejected(String),
    NoTransport(String),
}

/// Opens a transport (a WebSocket first, then long-polling), and handshakes
/// over it unless the client already has an id.
async fn establish(
    shared: Arc<Shared>,
    extensions: Vec<Arc<dyn Extension>>,
    client_id: Option<String>,
    hs_id: u64,
    timeout: Duration,
) -> Result<Established, Failure> {
    let disabled = crate::lock(&shared.disabled).clone();
    let endpoint = shared.endpoint.clone();
    let mut transport = None;
    let mut last = None;
    #[cfg(feature = "in-process")]
    if let Some(server) = &shared.local {
        transport = Some(Transport::in_process(server.as_ref()));
    }
    if transport.is_none() && !disabled.contains(&TransportKind::WebSocket) {
        match Transport::websocket(endpoint.clone(), shared.websocket_deflate).await {
            Ok(t) => transport = Some(t),
            Err(e) => {
                tracing::debug!(error = %e, "no WebSocket: trying long-polling");
                last = Some(e);
            }
        }
    }
    if transport.is_none() && !disabled.contains(&TransportKind::LongPolling) {
        transport = Some(Transport::long_polling(endpoint.clone()));
    }
    let Some(mut transport) = transport else {
        return Err(match last {
            Some(e) => Failure::Network(e),
            None => Failure::NoTransport("every transport is disabled".into()),
        });
    };
    if client_id.is_some() {
        return Ok(Established { transport, handshake: None });
    }
    let types: Vec<&str> = if transport.kind == TransportKind::InProcess {
        vec![TransportKind::InProcess.name()]
    } else {
        [TransportKind::WebSocket, TransportKind::LongPolling]
            .into_iter()
            .filter(|k| !disabled.contains(k))
            .map(TransportKind::name)
            .collect()
    };
    let handshake = Message {
        id: Some(json!(base36(hs_id))),
        version: Some(json!(faye_protocol::BAYEUX_VERSION)),
        supported_connection_types: Some(json!(types)),
        ..Message::on("/meta/handshake")
    };
    let Some(handshake) = pipe(&extensions, handshake, true).await else {
        return Err(Failure::Rejected("an extension dropped the handshake".into()));
    };
    transport.send(Lane::Other, &[handshake], timeout);
    let reply = tokio::time::timeout(timeout, async {
        while let Some(event) = transport.events.recv().await {
            match event {
                Event::Messages(_, messages) => {
                    for m in messages {
                        let Some(m) = pipe(&extensions, m, false).await else { continue };
                        if m.successful.is_some() && m.id.as_ref().and_then(parse_id) == Some(hs_id)
                        {
                            return Ok(m);
                        }
                    }
                }
                Event::Failed(e) | Event::Closed(e) => return Err(Error::Io(e)),
            }
        }
        Err(Error::Io("the transport stopped".into()))
    })
    .await
    .map_err(|_| Failure::Network(Error::Timeout))?
    .map_err(Failure::Network)?;
    if reply.successful != Some(true) {
        return Err(Failure::Rejected(reply.error.unwrap_or_else(|| "handshake refused".into())));
    }
    let Some(id) = reply.client_id else {
        return Err(Failure::Rejected("the handshake reply has no clientId".into()));
    };
    let supported: Option<Vec<String>> =
        reply.supported_connection_types.and_then(|v| serde_json::from_value(v).ok());
    if let Some(supported) = supported
        && !supported.iter().any(|t| t == transport.kind.name())
    {
        let lp = TransportKind::LongPolling;
        if transport.kind == TransportKind::WebSocket
            && !disabled.contains(&lp)
            && supported.iter().any(|t| t == lp.name())
        {
            transport = Transport::long_polling(endpoint);
        } else {
            return Err(Failure::NoTransport(format!("the server supports only {supported:?}")));
        }
    }
    Ok(Established { transport, handshake: Some((id, reply.advice)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_faye_base36() {
        assert_eq!(base36(1), "1");
        assert_eq!(base36(10), "a");
        assert_eq!(base36(36), "10");
        assert_eq!(parse_id(&json!("10")), Some(36));
    }
}
