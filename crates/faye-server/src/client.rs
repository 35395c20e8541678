//! The in-process client (Faye's `server.getClient()`): how a back end publishes to
//! browsers and listens to what they send, with no HTTP in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use faye_engine::Engine;
use faye_protocol::{Channel, Message};
use serde::Serialize;
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::{Context, Push, Reply, Server, Socket};

/// Why an operation of the in-process client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused: the Bayeux error string, e.g. `405:/*:Invalid channel`,
    /// or whatever an extension set.
    #[error("rejected by the server: {0}")]
    Rejected(String),
    /// An extension dropped the message, so no reply came.
    #[error("no reply (an extension dropped the message)")]
    NoReply,
    /// The data could not be serialized to JSON.
    #[error("data is not serializable: {0}")]
    Data(#[from] serde_json::Error),
}

/// A message received on a subscription.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The channel it was published to (useful with wildcard subscriptions).
    pub channel: String,
    /// The payload, raw JSON as published.
    pub data: Box<RawValue>,
}

impl ReceivedMessage {
    /// The payload deserialized into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}

/// Messages arriving on one subscribed channel or pattern. Ends when the client
/// disconnects or unsubscribes from the channel.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<ReceivedMessage>,
}

impl Subscription {
    /// The next message, or `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<ReceivedMessage> {
        self.rx.recv().await
    }
}

/// Listeners per subscribed channel or pattern.
type Listeners = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<ReceivedMessage>>>>>;

fn lock(l: &Listeners) -> MutexGuard<'_, HashMap<String, Vec<mpsc::Sender<ReceivedMessage>>>> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets the senders of dropped [`Subscription`]s, each of which would otherwise
/// keep its channel's buffer for the life of the client. A channel left with none
/// stays subscribed on the server until [`LocalClient::unsubscribe`].
fn prune(map: &mut HashMap<String, Vec<mpsc::Sender<ReceivedMessage>>>) {
    for senders in map.values_mut() {
        senders.retain(|tx| !tx.is_closed());
    }
}

/// A client inside the server process. It goes through the server's extensions
/// like any client, but with no request, so it may also subscribe to `/meta/**`
/// and `/service/**` (to serve what remote clients publish there).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), faye_server::ClientError> {
/// let server = faye_server::Server::new(faye_engine::MemoryEngine::new(), Default::default());
/// let client = server.client().await?;
/// let mut news = client.subscribe("/news/*").await?;
/// client.publish("/news/today", &serde_json::json!({"headline": "hi"})).await?;
/// let delivery = news.recv().await.unwrap();
/// assert_eq!(delivery.channel, "/news/today");
/// # Ok(()) }
/// ```
pub struct LocalClient<E: Engine> {
    server: Server<E>,
    client_id: String,
    listeners: Listeners,
    tasks: [AbortHandle; 2],
}

/// Buffered messages per subscription; a full buffer makes delivery wait, and the
/// client's queue in the engine takes the rest.
const SUBSCRIPTION_BUFFER: usize = 256;

impl<E: Engine> Server<E> {
    /// A new in-process client, already handshaken and connected.
    pub async fn client(&self) -> Result<LocalClient<E>, ClientError> {
        let handshake = Message {
            version: Some(json!(faye_protocol::BAYEUX_VERSION)),
            supported_connection_types: Some(json!(["in-process"])),
            ..Message::on("/meta/handshake")
        };
        let reply = request(self, handshake).await?;
        let client_id = reply.client_id.ok_or(ClientError::NoReply)?;
        let listeners: Listeners = Arc::default();
        let socket = Arc::new(self.trusted_socket());
        let connect = tokio::spawn(connect_loop(self.clone(), socket.clone(), client_id.clone()));
        let pump = tokio::spawn(pump(socket, listeners.clone()));
        Ok(LocalClient {
            server: self.clone(),
            client_id,
            listeners,
            tasks: [connect.abort_handle(), pump.abort_handle()],
        })
    }
}

/// Sends one message in-process and returns its reply, or the error it carries.
async fn request<E: Engine>(server: &Server<E>, message: Message) -> Result<Message, ClientError> {
    let reply = server.process(vec![message], &Context::trusted()).await.into_iter().next();
    let Some(Reply::Message(reply)) = reply else { return Err(ClientError::NoReply) };
    match (reply.successful, &reply.error) {
        (Some(true), _) => Ok(*reply),
        (_, Some(error)) => Err(ClientError::Rejected(error.clone())),
        _ => Err(ClientError::Rejected(String::new())),
    }
}

/// Keeps a `/meta/connect` held on the client's socket, which binds it and keeps
/// the session alive; stops when the session ends.
async fn connect_loop<E: Engine>(server: Server<E>, socket: Arc<Socket<E>>, client_id: String) {
    let connect = Message {
        client_id: Some(client_id),
        connection_type: Some("in-process".to_owned()),
        ..Message::on("/meta/connect")
    };
    loop {
        let replies = server.process(vec![connect.clone()], &Context::on_socket(&socket)).await;
        let ok = matches!(replies.first(), Some(Reply::Message(m)) if m.successful == Some(true));
        if !ok || server.is_shutting_down() {
            return;
        }
    }
}

/// Hands pushed messages to the subscriptions they match.
async fn pump<E: Engine>(socket: Arc<Socket<E>>, listeners: Listeners) {
    loop {
        let Push::Messages(messages) = socket.next_push().await else { break };
        for encoded in messages {
            // Deliveries reach this process as the bytes every recipient shares.
            let Ok(message) = encoded.decode() else { continue };
            let (Some(name), Some(data)) = (message.channel, message.data) else { continue };
            let Some(channel) = Channel::parse(&name) else { continue };
            let targets: Vec<mpsc::Sender<ReceivedMessage>> = {
                let map = lock(&listeners);
                channel.expand().iter().filter_map(|key| map.get(key)).flatten().cloned().collect()
            };
            let mut dropped = false;
            for tx in targets {
                let received = ReceivedMessage { channel: name.clone(), data: data.clone() };
                dropped |= tx.send(received).await.is_err();
            }
            if dropped {
                prune(&mut lock(&listeners));
            }
        }
    }
    // The session is over: end every subscription.
    lock(&listeners).clear();
}

impl<E: Engine> LocalClient<E> {
    /// The client's id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Subscribes to a channel or pattern. Several subscriptions to the same channel
    /// each get every message; the server is asked only once.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let first = !lock(&self.listeners).contains_key(channel);
        if first {
            request(&self.server, self.message("/meta/subscribe", Some(channel))).await?;
        }
        let mut listeners = lock(&self.listeners);
        prune(&mut listeners);
        listeners.entry(channel.to_owned()).or_default().push(tx);
        Ok(Subscription { rx })
    }

    /// Unsubscribes from a channel; its subscriptions end.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        lock(&self.listeners).remove(channel);
        request(&self.server, self.message("/meta/unsubscribe", Some(channel))).await.map(drop)
    }

    /// Publishes `data` to `channel`.
    pub async fn publish(&self, channel: &str, data: &impl Serialize) -> Result<(), ClientError> {
        let message = Message { data: Some(to_raw_value(data)?), ..self.message(channel, None) };
        request(&self.server, message).await.map(drop)
    }

    /// Ends the session; every subscription ends.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        request(&self.server, self.message("/meta/disconnect", None)).await.map(drop)
    }

    /// A message from this client on `channel`.
    fn message(&self, channel: &str, subscription: Option<&str>) -> Message {
        Message {
            client_id: Some(self.client_id.clone()),
            subscription: subscription.map(|s| json!(s)),
            ..Message::on(channel)
        }
    }
}

impl<E: Engine> std::fmt::Debug for LocalClient<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<String> = lock(&self.listeners).keys().cloned().collect();
        f.debug_struct("LocalClient")
            .field("client_id", &self.client_id)
            .field("channels", &channels)
            .finish_non_exhaustive()
    }
}

impl<E: Engine> Drop for LocalClient<E> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use faye_engine::MemoryEngine;

    use super::*;

    fn senders(client: &LocalClient<MemoryEngine>, channel: &str) -> usize {
        lock(&client.listeners).get(channel).map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_forgotten() {
        let server = Server::new(MemoryEngine::new(), Default::default());
        let client = server.client().await.unwrap();
        for _ in 0..100 {
            drop(client.subscribe("/a").await.unwrap());
        }
        assert!(senders(&client, "/a") <= 1, "{} senders kept", senders(&client, "/a"));

        // Delivery forgets them too, without a new subscription.
        let dropped = client.subscribe("/b").await.unwrap();
        let mut kept = client.subscribe("/*").await.unwrap();
        drop(dropped);
        client.publish("/b", &1).await.unwrap();
        assert_eq!(kept.recv().await.unwrap().channel, "/b");
        // Delivered after the first one was handed out and the senders pruned.
        client.publish("/c", &2).await.unwrap();
        assert_eq!(kept.recv().await.unwrap().channel, "/c");
        assert_eq!(senders(&client, "/b"), 0);
        assert_eq!(senders(&client, "/*"), 1);
    }
}
