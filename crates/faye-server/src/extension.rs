//! Extensions: code that sees, changes, rejects or drops every message on its way
//! in and every reply and delivery on its way out (Faye's `addExtension`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

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
    /// keeps its request for hours should not. The URI and the headers are copied
    /// into one buffer, and the URI and values are views into it: one allocation,
    /// not one per value (names the `http` crate knows are not allocated at all).
    pub fn detached(&self) -> Self {
        KeptRequest::new(self).build()
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

/// The request a socket keeps for its life: its URI and headers in one buffer,
/// made into a [`RequestInfo`] the first time something asks for it (an
/// extension, when the server has any). A socket on a server without extensions
/// never does, and keeps about a quarter of the bytes a `RequestInfo` takes.
pub(crate) struct KeptRequest {
    pub(crate) transport: &'static str,
    pub(crate) remote_addr: Option<SocketAddr>,
    method: http::Method,
    /// The URI, then for each header in order `\n` (`\r` if it is sensitive),
    /// name, `:` and value: no URI or header holds a `\n` or `\r`, and no header
    /// name a `:`.
    raw: bytes::Bytes,
    info: OnceLock<Arc<RequestInfo>>,
}

impl KeptRequest {
    pub(crate) fn new(request: &RequestInfo) -> Self {
        let uri = request.uri.to_string();
        let headers = request.headers.iter();
        let size = headers.map(|(n, v)| n.as_str().len() + v.len() + 2).sum::<usize>();
        let mut raw = Vec::with_capacity(uri.len() + size);
        raw.extend_from_slice(uri.as_bytes());
        for (name, value) in &request.headers {
            raw.push(if value.is_sensitive() { b'\r' } else { b'\n' });
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(b':');
            raw.extend_from_slice(value.as_bytes());
        }
        Self {
            transport: request.transport,
            remote_addr: request.remote_addr,
            method: request.method.clone(),
            raw: raw.into(),
            info: OnceLock::new(),
        }
    }

    /// The request, made from the kept bytes on first use.
    pub(crate) fn info(&self) -> &Arc<RequestInfo> {
        self.info.get_or_init(|| Arc::new(self.build()))
    }

    /// The request again; its URI and header values are views into the kept bytes.
    fn build(&self) -> RequestInfo {
        let raw = &self.raw;
        let starts_header = |b: &u8| matches!(b, b'\n' | b'\r');
        let uri_len = raw.iter().position(starts_header).unwrap_or(raw.len());
        let mut headers = http::HeaderMap::new();
        let mut at = uri_len;
        while at < raw.len() {
            let sensitive = raw[at] == b'\r';
            let start = at + 1;
            at = raw[start..].iter().position(starts_header).map_or(raw.len(), |n| start + n);
            let line = &raw[start..at];
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let name = http::HeaderName::from_bytes(&line[..colon]);
            let value = http::HeaderValue::from_maybe_shared(raw.slice(start + colon + 1..at));
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(sensitive);
                headers.append(name, value);
            }
        }
        RequestInfo {
            transport: self.transport,
            method: self.method.clone(),
            uri: http::Uri::from_maybe_shared(raw.slice(..uri_len)).unwrap_or_default(),
            headers,
            remote_addr: self.remote_addr,
        }
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

#[cfg(test)]
mod tests {
    use super::{KeptRequest, RequestInfo};
    use http::{HeaderValue, header};

    fn request(sensitive: bool) -> RequestInfo {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com:80"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2: x"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        let mut token = HeaderValue::from_static("Bearer t0ken");
        token.set_sensitive(sensitive);
        headers.insert(header::AUTHORIZATION, token);
        RequestInfo {
            transport: "websocket",
            method: http::Method::GET,
            uri: "/bayeux?x=1&y=%20".parse().unwrap(),
            headers,
            remote_addr: Some("127.0.0.1:9".parse().unwrap()),
        }
    }

    #[test]
    fn a_kept_request_gives_back_the_request_it_kept() {
        for sensitive in [false, true] {
            let original = request(sensitive);
            let kept = KeptRequest::new(&original);
            assert_eq!(
                (kept.transport, kept.remote_addr),
                (original.transport, original.remote_addr)
            );
            let info = kept.info();
            assert_eq!(info.method, original.method);
            assert_eq!(info.uri, original.uri);
            assert_eq!(info.headers, original.headers);
            let cookies: Vec<_> = info.headers.get_all(header::COOKIE).iter().collect();
            assert_eq!(cookies, ["a=1", "b=2: x"]);
            assert_eq!(info.headers[header::AUTHORIZATION].is_sensitive(), sensitive);
            assert_eq!(
                (info.transport, info.remote_addr),
                (original.transport, original.remote_addr)
            );
            assert!(std::sync::Arc::ptr_eq(info, kept.info()), "made once");
        }
    }

    #[test]
    fn a_detached_copy_keeps_the_uri_every_header_value_in_order_and_sensitivity() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let mut secret = HeaderValue::from_static("Bearer t0ken");
        secret.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, secret);
        headers.insert("x-custom", HeaderValue::from_static(""));
        let request = RequestInfo {
            transport: "websocket",
            method: http::Method::GET,
            uri: "/bayeux?x=1&y=%20".parse().unwrap(),
            headers,
            remote_addr: Some("127.0.0.1:9".parse().unwrap()),
        };
        let copy = request.detached();
        assert_eq!(copy.uri, request.uri);
        assert_eq!(copy.uri.query(), Some("x=1&y=%20"));
        assert_eq!(copy.headers, request.headers);
        let cookies: Vec<_> = copy.headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(copy.headers[header::AUTHORIZATION].is_sensitive());
        assert!(!copy.headers[header::HOST].is_sensitive());
        assert_eq!(copy.cookie("b"), Some("2"));
        assert_eq!((copy.transport, copy.remote_addr), (request.transport, request.remote_addr));
    }
}
