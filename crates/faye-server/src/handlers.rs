//! Faye's Bayeux handlers (`src/protocol/server.js`): one function per meta channel
//! plus publish. Errors are assigned in Faye's order and the last one wins.

use std::task::Poll;
use std::time::Duration;

use faye_engine::{ClientId, Engine, Subscribed};
use faye_protocol::{
    BAYEUX_VERSION, BayeuxError, CONNECTION_TYPES, Channel, EncodedMessage, Message, MetaChannel,
    is_truthy, js_string,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::binding::{self, Binding, BindingGuard};
use crate::extension::{Stage, pipe};
use crate::{Context, Event, Reply, Server};

/// The error of a reply whose engine failed (`500::Internal server error`).
static SERVER_ERROR: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| BayeuxError::server_error().into());

/// How long a client whose request met an engine failure is advised to wait.
const ENGINE_RETRY: Duration = Duration::from_secs(1);

/// Faye's `_makeResponse`: id, clientId, channel and error copied when truthy.
fn make_response(msg: &Message) -> Message {
    Message {
        id: msg.id.clone().filter(is_truthy),
        client_id: msg.client_id.clone(),
        channel: msg.channel.clone(),
        error: msg.error.clone(),
        ..Message::default()
    }
}

/// Past `max_handshakes_per_request`. Faye's `400` (`Bad request`) code, with a
/// message that says which bound.
const TOO_MANY_HANDSHAKES: &str = "400::Too many handshakes in one request";

/// After shutdown began. Faye has no such state; 503 is HTTP's "come back later".
const SHUTTING_DOWN: &str = "503::Server shutting down";

/// How soon a client refused during shutdown should try again: the server is going
/// away within seconds, and whatever replaces it may already be up.
const SHUTDOWN_RETRY_MS: u64 = 1000;

/// Past `max_clients`. Faye has no code for a full server; 503 is HTTP's.
const TOO_MANY_CLIENTS: &str = "503::Too many clients";

fn finish(mut reply: Message) -> Message {
    reply.successful = Some(reply.error.is_none());
    reply
}

/// The entries of a value Faye runs through `[].concat(value)`, as strings.
fn concat_strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(js_string).collect(),
        other => vec![js_string(other)],
    }
}

impl<E: Engine> Server<E> {
    /// One message: incoming extensions, the handler, outgoing extensions.
    pub(crate) async fn handle(&self, msg: Message, ctx: &Context<'_, E>) -> Vec<Reply> {
        if self.shared.extensions.is_empty() {
            return self.dispatch(msg, ctx).await;
        }
        let extensions = self.shared.extensions.snapshot();
        let request = ctx.request();
        let Some(msg) = pipe(&extensions, Stage::Incoming, msg, request).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut deliveries = Vec::new();
        for reply in self.dispatch(msg, ctx).await {
            match reply {
                Reply::Message(m) => {
                    if let Some(m) = pipe(&extensions, Stage::Outgoing, *m, request).await {
                        out.push(Reply::message(m));
                    }
                }
                Reply::Delivery(bytes) => deliveries.push(bytes),
            }
        }
        // Deliveries only ever follow their connect reply.
        let deliveries = self.outgoing_deliveries(deliveries, request).await;
        out.extend(deliveries.into_iter().map(Reply::Delivery));
        out
    }

    async fn dispatch(&self, msg: Message, ctx: &Context<'_, E>) -> Vec<Reply> {
        let name = msg.channel.as_deref().unwrap_or("");
        // Parsed once: a publish hands this on to the engine.
        let channel = Channel::parse(name);
        if !channel.as_ref().is_some_and(Channel::is_meta) {
            return vec![Reply::message(self.publish(msg, channel, ctx).await)];
        }
        let reply = match MetaChannel::from_name(name) {
            Some(MetaChannel::Handshake) => self.handshake(msg, ctx).await,
            Some(MetaChannel::Connect) => return self.connect(msg, ctx).await,
            Some(MetaChannel::Disconnect) => self.disconnect(msg).await,
            Some(MetaChannel::Subscribe) => self.subscribe(msg, true, ctx.is_trusted()).await,
            Some(MetaChannel::Unsubscribe) => self.subscribe(msg, false, ctx.is_trusted()).await,
            None => {
                let mut reply = make_response(&msg);
                reply.error = Some(BayeuxError::channel_forbidden(name).into());
                finish(reply)
            }
        };
        vec![Reply::message(reply)]
    }

    /// Whether a parsed channel is within the configured bounds on length and
    /// segments (Faye has neither).
    fn within_limits(&self, channel: &Channel) -> bool {
        let opts = &self.shared.options;
        channel.as_str().len() <= opts.max_channel_length
            && channel.segments() <= opts.max_channel_segments
    }

    /// Faye's `_advize`, for handshake and connect replies.
    fn advice(&self, reply: &Message, eventsource: bool) -> Value {
        let opts = &self.shared.options;
        let ms = |d: Duration| d.as_millis() as u64;
        let engine_failed = reply.error.as_deref() == Some(SERVER_ERROR.as_str());
        if engine_failed {
            // The engine (Redis, say) did not answer: the session may well be intact,
            // so the client should try again in a moment, not start a new session.
            json!({"reconnect": "retry", "interval": ms(opts.interval.max(ENGINE_RETRY)),
                   "timeout": ms(opts.timeout)})
        } else if reply.error.is_some() {
            json!({"reconnect": "handshake"})
        } else if eventsource {
            json!({"reconnect": "retry", "interval": ms(opts.timeout), "timeout": 0})
        } else {
            json!({"reconnect": "retry", "interval": ms(opts.interval), "timeout": ms(opts.timeout)})
        }
    }

    /// Whether the request's clientId names a live client. Ids we could never have
    /// issued are unknown without asking the engine.
    async fn known_client(&self, msg: &Message) -> Result<Option<ClientId>, BayeuxError> {
        let Some(id) = msg.client_id.as_deref().and_then(ClientId::parse) else {
            return Ok(None);
        };
        match self.engine().client_exists(&id).await {
            Ok(true) => Ok(Some(id)),
            Ok(false) => Ok(None),
            Err(e) => {
                tracing::error!(error = %e, "engine failed");
                Err(BayeuxError::server_error())
            }
        }
    }

    /// The 401/402 checks shared by connect, disconnect, subscribe and unsubscribe.
    async fn check_client(&self, msg: &Message, reply: &mut Message) -> Option<ClientId> {
        let known = match self.known_client(msg).await {
            Ok(known) => known,
            Err(e) => {
                reply.error = Some(e.into());
                return None;
            }
        };
        if known.is_none() {
            reply.error =
                Some(BayeuxError::client_unknown(msg.client_id.clone().unwrap_or_default()).into());
        }
        if msg.client_id.is_none() {
            reply.error = Some(BayeuxError::parameter_missing("clientId").into());
        }
        known
    }

    /// Why a valid handshake is refused, and the advice that goes with it: faye-rs's
    /// own bounds, checked after Faye's validation. The in-process client (a
    /// trusted context) is not counted against them.
    fn handshake_refusal(&self, ctx: &Context<'_, E>) -> Option<(&'static str, Value)> {
        let opts = &self.shared.options;
        if self.is_shutting_down() {
            let retry = json!({"reconnect": "handshake", "interval": SHUTDOWN_RETRY_MS});
            return Some((SHUTTING_DOWN, retry));
        }
        let back_off =
            json!({"reconnect": "handshake", "interval": opts.timeout.as_millis() as u64});
        if ctx.is_trusted() {
            return None;
        }
        if ctx.count_handshake() >= opts.max_handshakes_per_request {
            return Some((TOO_MANY_HANDSHAKES, back_off));
        }
        if self.shared.registry.clients() >= opts.max_clients {
            return Some((TOO_MANY_CLIENTS, back_off));
        }
        None
    }

    async fn handshake(&self, msg: Message, ctx: &Context<'_, E>) -> Message {
        let mut reply = make_response(&msg);
        reply.version = Some(json!(BAYEUX_VERSION));
        reply.supported_connection_types = Some(json!(CONNECTION_TYPES));
        if !msg.version.as_ref().is_some_and(is_truthy) {
            reply.error = Some(BayeuxError::parameter_missing("version").into());
        }
        match msg.supported_connection_types.as_ref().filter(|v| is_truthy(v)) {
            None => {
                reply.error =
                    Some(BayeuxError::parameter_missing("supportedConnectionTypes").into());
            }
            Some(types) => {
                // A string is a list of characters to Faye, so it never matches.
                let common = types.as_array().is_some_and(|list| {
                    list.iter().any(|t| t.as_str().is_some_and(|t| CONNECTION_TYPES.contains(&t)))
                });
                if !common {
                    reply.error = Some(BayeuxError::conntype_mismatch(js_string(types)).into());
                }
            }
        }
        if reply.error.is_none()
            && let Some((error, advice)) = self.handshake_refusal(ctx)
        {
            reply.error = Some(error.to_owned());
            reply.advice = Some(advice);
            return finish(reply);
        }
        if reply.error.is_none() {
            match self.engine().create_client().await {
                Ok(id) => {
                    self.shared.registry.order.start(id, msg.id.as_ref());
                    self.shared.registry.rates.start(id);
                    reply.client_id = Some(id.to_string());
                }
                Err(e) => {
                    tracing::error!(error = %e, "engine failed to create a client");
                    reply.error = Some(BayeuxError::server_error().into());
                }
            }
        }
        reply.advice = Some(self.advice(&reply, false));
        finish(reply)
    }

    async fn connect(&self, msg: Message, ctx: &Context<'_, E>) -> Vec<Reply> {
        let mut reply = make_response(&msg);
        if self.is_shutting_down() {
            // Not `handshake`: with a shared engine the session outlives this server;
            // if it did not, the next connect (elsewhere) gets 401 and says so. The
            // engine is not asked, as it may have stopped.
            reply.error = Some(SHUTTING_DOWN.to_owned());
            reply.advice = Some(json!({"reconnect": "retry", "interval": SHUTDOWN_RETRY_MS}));
            return vec![Reply::message(finish(reply))];
        }
        let client = self.check_client(&msg, &mut reply).await;
        let connection_type = msg.connection_type.as_deref();
        if !connection_type.is_some_and(|t| CONNECTION_TYPES.contains(&t)) {
            reply.error =
                Some(BayeuxError::conntype_mismatch(connection_type.unwrap_or("")).into());
        }
        if connection_type.is_none() {
            reply.error = Some(BayeuxError::parameter_missing("connectionType").into());
        }
        let client = match client {
            Some(client) if reply.error.is_none() => client,
            _ => {
                reply.client_id = None;
                reply.advice = Some(self.advice(&reply, false));
                return vec![Reply::message(finish(reply))];
            }
        };
        let eventsource = connection_type == Some("eventsource");
        // The hold counts from the batch's arrival: a client times a connect out
        // 1.2 x the timeout after sending it (and Faye's WebSocket transport then
        // drops the socket and resends everything pending), so a connect that
        // waited behind slow messages of its batch (publishes to a remote engine)
        // must not hold for the full time on top.
        let hold = if eventsource {
            Duration::ZERO
        } else {
            self.requested_hold(&msg).saturating_sub(ctx.age())
        };
        if let Err(e) = self.engine().ping(&client).await {
            tracing::error!(error = %e, "engine failed to ping");
        }
        let mut replies = match ctx.socket {
            Some(socket) if ctx.parks_connects() && !hold.is_zero() => {
                socket.bind(client);
                // Held as data on the socket, not as this future: the reply is
                // built now and the socket sends it when the hold ends.
                reply.advice = Some(self.advice(&reply, eventsource));
                ctx.parked(socket.park(&finish(reply), hold));
                return Vec::new();
            }
            Some(socket) => {
                let binding = socket.bind(client);
                let superseded = socket.hold_next();
                self.hold(&binding, &superseded, hold).await;
                Vec::new()
            }
            // The client has a live socket (an EventSource stream, or a WebSocket):
            // its messages go down the socket, which an HTTP connect must not take
            // over. The connect only pings, and is answered at once: a Faye
            // browser client sends long-polling connects until it has switched to
            // the socket it just opened (its transport is chosen asynchronously),
            // and holding one would keep it off the socket for the whole timeout
            // (Faye holds it).
            None if self.shared.registry.has_socket(&client) => Vec::new(),
            None => {
                // The connect's id says whether the client is asking again for an
                // answer it did not get (see `Engine::take_queue`).
                let request = msg.id.as_ref().map(|id| match id {
                    Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    other => std::borrow::Cow::Owned(other.to_string()),
                });
                self.poll(client, hold, request.as_deref()).await
            }
        };
        reply.advice = Some(self.advice(&reply, eventsource));
        replies.insert(0, Reply::message(finish(reply)));
        replies
    }

    /// The hold the client asked for (`advice.timeout`, in ms), capped at the
    /// server's timeout (Faye does not cap it, and a client asking for more than 2T
    /// kills its own session).
    fn requested_hold(&self, msg: &Message) -> Duration {
        let max = self.shared.options.timeout;
        let asked = msg.advice.as_ref().and_then(|a| a.get("timeout")).and_then(Value::as_f64);
        // A number too large for a Duration is simply more than the cap.
        let asked = asked.and_then(|ms| Duration::try_from_secs_f64((ms / 1000.0).max(0.0)).ok());
        asked.map_or(max, |hold| hold.min(max))
    }

    /// Holds a connect on a socket: deliveries are pushed meanwhile, so the reply is
    /// a heartbeat sent after `hold`, or at once when the binding ends or a newer
    /// connect on the socket supersedes this one.
    async fn hold(&self, binding: &Binding, superseded: &CancellationToken, hold: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(hold) => {}
            _ = binding.ended.cancelled() => {}
            _ = superseded.cancelled() => {}
        }
    }

    /// A long-poll connect: returns as soon as there are messages (with every
    /// message of the same tick), after `hold`, or at once if a newer connect for the
    /// same client replaces this one.
    async fn poll(&self, client: ClientId, hold: Duration, request: Option<&str>) -> Vec<Reply> {
        let registry = &self.shared.registry;
        let binding = Binding::request();
        registry.bind(client, binding.clone());
        let _guard = BindingGuard { registry, client, binding: binding.clone() };
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            match self.engine().take_queue(&client, request).await {
                Ok(messages) if !messages.is_empty() => {
                    return messages.into_iter().map(Reply::Delivery).collect();
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "engine failed to read a queue"),
            }
            if hold.is_zero() || binding.ended.is_cancelled() {
                return Vec::new();
            }
            // Mail, or the binding's end (checked above).
            tokio::select! {
                flags = binding.signal.wait() => if flags & binding::MAIL != 0 {
                    tokio::task::yield_now().await;
                },
                _ = tokio::time::sleep_until(deadline) => return Vec::new(),
            }
        }
    }

    async fn disconnect(&self, msg: Message) -> Message {
        let mut reply = make_response(&msg);
        let client = self.check_client(&msg, &mut reply).await;
        match client {
            Some(client) if reply.error.is_none() => {
                if let Err(e) = self.engine().destroy_client(&client).await {
                    tracing::error!(error = %e, "engine failed to destroy a client");
                    reply.error = Some(BayeuxError::server_error().into());
                }
            }
            _ => reply.client_id = None,
        }
        finish(reply)
    }

    async fn subscribe(&self, msg: Message, subscribe: bool, trusted: bool) -> Message {
        let mut reply = make_response(&msg);
        let client = self.check_client(&msg, &mut reply).await;
        let subscription = msg.subscription.filter(is_truthy);
        reply.subscription = Some(subscription.clone().unwrap_or_else(|| json!([])));
        let Some(subscription) = subscription else {
            reply.error = Some(BayeuxError::parameter_missing("subscription").into());
            return finish(reply);
        };
        let Some(client) = client.filter(|_| reply.error.is_none()) else {
            return finish(reply);
        };
        // Channels are walked in order and the walk stops at the first bad one; the
        // ones before it have taken effect (Faye is not atomic here either).
        for name in concat_strings(&subscription) {
            let channel = Channel::parse(&name);
            if !trusted && !channel.as_ref().is_some_and(Channel::is_subscribable) {
                reply.error = Some(BayeuxError::channel_forbidden(name.as_str()).into());
            }
            let channel = channel.filter(|c| self.within_limits(c));
            if channel.is_none() {
                reply.error = Some(BayeuxError::channel_invalid(name.as_str()).into());
            }
            let Some(channel) = channel.filter(|_| reply.error.is_none()) else { break };
            let done = if subscribe {
                self.engine().subscribe(&client, &channel).await
            } else {
                self.engine().unsubscribe(&client, &channel).await.map(|_| Subscribed::Unchanged)
            };
            match done {
                Ok(Subscribed::LimitReached) => {
                    reply.error = Some(BayeuxError::subscription_limit(name.as_str()).into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "engine failed to change a subscription");
                    reply.error = Some(BayeuxError::server_error().into());
                    break;
                }
            }
        }
        finish(reply)
    }

    /// A publish to `channel`, the message's channel as parsed by `dispatch`.
    async fn publish(
        &self,
        msg: Message,
        channel: Option<Channel>,
        ctx: &Context<'_, E>,
    ) -> Message {
        let mut reply = make_response(&msg);
        let channel = channel.filter(|c| c.is_name() && self.within_limits(c));
        if channel.is_none() {
            let name = msg.channel.as_deref().unwrap_or("");
            reply.error = Some(BayeuxError::channel_invalid(name).into());
        }
        if msg.data.is_none() {
            reply.error = Some(BayeuxError::parameter_missing("data").into());
        }
        if let Some(channel) = channel.filter(|_| reply.error.is_none()) {
            let encoded = EncodedMessage::delivery(&msg);
            if !self.shared.registry.rates.allow(msg.client_id.as_deref(), encoded.json().len()) {
                reply.error = Some(format!("429:{channel}:Too many publishes"));
                return finish(reply);
            }
            let mut publishing = std::pin::pin!(self.engine().publish(&channel, encoded));
            let first = std::future::poll_fn(|cx| Poll::Ready(publishing.as_mut().poll(cx))).await;
            // The engine has the publish in line (see `Engine::publish`): the
            // client's next message may go while this one completes.
            ctx.placed();
            let published = match first {
                Poll::Ready(published) => published,
                Poll::Pending => publishing.await,
            };
            match published {
                Ok(()) => self.emit(|| Event::Publish {
                    client_id: msg.client_id.clone(),
                    channel: channel.as_str().to_owned(),
                    data: msg.data.clone().unwrap_or_default(),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "engine failed to publish");
                    reply.error = Some(BayeuxError::server_error().into());
                }
            }
        }
        finish(reply)
    }
}
