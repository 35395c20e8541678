//! A ready-made token check: which tokens may subscribe to, and publish on, which
//! channels.

use faye_protocol::{Message, channel, js_string};
use serde_json::Value;

use crate::{BoxFuture, Extension, RequestInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Subscribe,
    Publish,
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    pattern: String,
    tokens: Vec<String>,
}

/// Token authorization, the extension every Faye deployment writes, ready-made.
///
/// Each rule protects a channel or pattern for subscribing or publishing and names
/// the tokens that may do it. Clients send their token in the message's `ext`
/// (field `authToken` by default; with the official client, add an outgoing client
/// extension that sets `message.ext = {authToken: ...}`).
///
/// - A `/meta/subscribe` to a channel or pattern that could receive messages of a
///   protected channel (`/**` overlaps `/private/**`) needs a token of every rule
///   it overlaps. Otherwise it fails with `403:<channel>:Authentication required`.
/// - A publish to a channel a publish rule matches needs one of that rule's tokens,
///   with the same error.
/// - Channels no rule covers are open.
/// - The token is removed from every incoming message, so it never reaches
///   subscribers or replies.
/// - The server's in-process client (no request) is the app itself and is trusted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use faye_server::{Server, TokenAuth};
///
/// let server = Server::new(faye_engine::MemoryEngine::new(), Default::default());
/// server.add_extension(Arc::new(
///     TokenAuth::new()
///         .subscribe("/private/**", ["reader-token", "admin-token"])
///         .publish("/private/**", ["admin-token"])
///         .publish("/announcements", ["admin-token"]),
/// ));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokenAuth {
    field: String,
    rules: Vec<Rule>,
}

impl Default for TokenAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenAuth {
    /// No rules: everything is open until rules are added.
    pub fn new() -> Self {
        Self { field: "authToken".into(), rules: Vec::new() }
    }

    /// The `ext` field that carries the token (default `authToken`).
    pub fn token_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Only `tokens` may subscribe to channels `pattern` covers.
    ///
    /// # Panics
    /// If `pattern` is not a valid channel name or pattern.
    pub fn subscribe<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        pattern: &str,
        tokens: I,
    ) -> Self {
        self.rule(Action::Subscribe, pattern, tokens)
    }

    /// Only `tokens` may publish to channels `pattern` covers.
    ///
    /// # Panics
    /// If `pattern` is not a valid channel name or pattern.
    pub fn publish<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        pattern: &str,
        tokens: I,
    ) -> Self {
        self.rule(Action::Publish, pattern, tokens)
    }

    fn rule<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        action: Action,
        pattern: &str,
        tokens: I,
    ) -> Self {
        assert!(channel::is_valid(pattern), "not a channel name or pattern: {pattern:?}");
        let tokens = tokens.into_iter().map(Into::into).collect();
        self.rules.push(Rule { action, pattern: pattern.to_owned(), tokens });
        self
    }

    /// Whether `token` satisfies every rule of `action` that `applies` to.
    fn allowed(&self, action: Action, token: Option<&str>, applies: impl Fn(&str) -> bool) -> bool {
        self.rules
            .iter()
            .filter(|r| r.action == action && applies(&r.pattern))
            .all(|r| token.is_some_and(|t| r.tokens.iter().any(|ok| constant_time_eq(ok, t))))
    }

    fn check(&self, message: &Message, token: Option<&str>) -> Option<String> {
        let denied = |name: &str| Some(format!("403:{name}:Authentication required"));
        match message.channel.as_deref() {
            Some("/meta/subscribe") => {
                let names = match &message.subscription {
                    Some(Value::Array(items)) => items.iter().map(js_string).collect(),
                    Some(other) => vec![js_string(other)],
                    None => Vec::new(),
                };
                names
                    .into_iter()
                    .find(|n| !self.allowed(Action::Subscribe, token, |p| channel::overlaps(p, n)))
                    .and_then(|n| denied(&n))
            }
            Some(name) if !channel::is_meta(name) => (!self
                .allowed(Action::Publish, token, |p| channel::matches(p, name)))
            .then(|| denied(name))
            .flatten(),
            _ => None,
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Extension for TokenAuth {
    fn incoming<'a>(
        &'a self,
        mut message: Message,
        request: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        let token = message
            .ext
            .as_mut()
            .and_then(Value::as_object_mut)
            .and_then(|ext| ext.remove(&self.field))
            .and_then(|t| t.as_str().map(str::to_owned));
        let remote = request.is_some();
        if let Some(error) = self.check(&message, token.as_deref()).filter(|_| remote) {
            message.error = Some(error);
        }
        Box::pin(std::future::ready(Some(message)))
    }
}
