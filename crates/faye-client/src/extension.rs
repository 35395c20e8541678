//! Client extensions (Faye's `client.addExtension`): async hooks on every message
//! the client sends and every message it receives.

use std::future::Future;
use std::pin::Pin;

use faye_protocol::Message;

/// A boxed future, as extension hooks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Code that sees, changes or drops each message: `outgoing` before it is sent
/// (handshakes, connects, subscribes, publishes...), `incoming` when it arrives
/// (replies and deliveries). Returning `None` drops the message: an outgoing one
/// is not sent and its operation fails with [`Error::NoReply`](crate::Error::NoReply);
/// an incoming one is ignored.
///
/// Extensions run in the order they were added, one message at a time, so they
/// never reorder messages.
///
/// ```
/// use faye_client::{BoxFuture, Extension};
/// use faye_protocol::Message;
///
/// /// Signs every subscribe with a token, as Faye's auth examples do.
/// struct Token(String);
///
/// impl Extension for Token {
///     fn outgoing<'a>(&'a self, mut message: Message) -> BoxFuture<'a, Option<Message>> {
///         if message.channel.as_deref() == Some("/meta/subscribe") {
///             message.ext = Some(serde_json::json!({ "token": self.0 }));
///         }
///         Box::pin(async move { Some(message) })
///     }
/// }
/// ```
pub trait Extension: Send + Sync + 'static {
    /// A message that arrived from the server.
    fn incoming<'a>(&'a self, message: Message) -> BoxFuture<'a, Option<Message>> {
        Box::pin(std::future::ready(Some(message)))
    }

    /// A message about to be sent.
    fn outgoing<'a>(&'a self, message: Message) -> BoxFuture<'a, Option<Message>> {
        Box::pin(std::future::ready(Some(message)))
    }
}
