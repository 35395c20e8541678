//! Extensions: code that sees, changes, rejects or drops every message on its way
//! in and every reply and delivery on its way out (Faye's `addExtension`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use faye_protocol::Message;

/// A boxed future, as extension hooks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an extension may know about the request a message arrived in. In-process
/// messages have none (Faye passes `null`).
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// How the message arrived: `long-polling`, `callback-polling`, `websocket` or
    /// `eventsource` (for an EventSource stream's deliveries).
    pub transport: &'static str,
    /// The HTTP method of the request (the upgrade request for a WebSocket).
    pub method: http::Method,
    /// The request's URI.
    pub uri: http::Uri,
    /// The request's headers (cookies, `Authorization`, `Origin`, ...).
    pub headers: http::HeaderMap,
    /// The peer's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
}

impl RequestInfo {
    /// A copy that owns its bytes. Header values parsed by hyper are views into the
    /// connection's read buffer and keep all of it (16 KiB) alive; a socket that
    /// keeps its request for hours should not.
    pub fn detached(&self) -> Self {
        let mut headers = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let copy = http::HeaderValue::from_bytes(value.as_bytes());
            if let (Ok(name), Ok(mut copy)) = (http::HeaderName::from_bytes(name.as_ref()), copy) {
                copy.set_sensitive(value.is_sensitive());
                headers.append(name, copy);
            }
        }
        Self {
            transport: self.transport,
            method: self.method.clone(),
            uri: self.uri.to_string().parse().unwrap_or_default(),
            headers,
            remote_addr: self.remote_addr,
        }
    }

    /// The value of the cookie `name`, if the request sent one.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(k, v)| (k == name).then_some(v))
    }
}

/// A server extension. Every hook has a default that passes the message on.
///
/// Return `Some(message)` (changed or not) to pass it on, or `None` to drop it: a
/// dropped incoming message gets no reply, a dropped reply or delivery is not sent.
/// To reject an incoming message, set `message.error` (for example
/// `"403::Authentication required"`): the server then skips the operation and
/// replies with that error, as in Faye.
///
/// Extensions run in the order they were added, for both stages. Outgoing hooks run
/// on every reply and on every delivery, once per recipient, on every transport.
///
/// ```
/// use faye_protocol::Message;
/// use faye_server::{BoxFuture, Extension, RequestInfo};
///
/// /// Only publishers that know the password may publish; subscribers never see it.
/// struct Password(String);
///
/// impl Extension for Password {
///     fn incoming<'a>(&'a self, mut m: Message, _: Option<&'a RequestInfo>) -> BoxFuture<'a, Option<Message>> {
///         let publish = !m.channel.as_deref().unwrap_or("").starts_with("/meta/");
///         let given = m.ext.as_mut().and_then(|e| e.as_object_mut()).and_then(|e| e.remove("password"));
///         if publish && given.as_ref().and_then(|p| p.as_str()) != Some(self.0.as_str()) {
///             m.error = Some("403::Password required".into());
///         }
///         Box::pin(async move { Some(m) })
///     }
/// }
/// ```
pub trait Extension: Send + Sync + 'static {
    /// Sees each incoming message, before the server handles it.
    fn incoming<'a>(
        &'a self,
        message: Message,
        request: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        let _ = request;
        Box::pin(std::future::ready(Some(message)))
    }

    /// Sees each reply and each delivered message, before it is sent.
    fn outgoing<'a>(
        &'a self,
        message: Message,
        request: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        let _ = request;
        Box::pin(std::future::ready(Some(message)))
    }

    /// Called when the extension is added to a server.
    fn added(&self) {}

    /// Called when the extension is removed from a server.
    fn removed(&self) {}
}

/// Which hook a pipeline runs.
#[derive(Clone, Copy)]
pub(crate) enum Stage {
    Incoming,
    Outgoing,
}

/// Runs `message` through `list` in order; `None` once an extension drops it.
pub(crate) async fn pipe(
    list: &[Arc<dyn Extension>],
    stage: Stage,
    mut message: Message,
    request: Option<&RequestInfo>,
) -> Option<Message> {
    for ext in list {
        message = match stage {
            Stage::Incoming => ext.incoming(message, request).await?,
            Stage::Outgoing => ext.outgoing(message, request).await?,
        };
    }
    Some(message)
}
