//! The in-process client (Faye's `server.getClient()`): how a back end publishes to
//! browsers and listens to what they send, with no HTTP in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use faye_engine::Engine;
use faye_protocol::{Message, channel, decode_batch};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
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
pub struct Delivery {
    /// The channel it was published to (useful with wildcard subscriptions).
    pub channel: String,
    /// The payload, raw JSON as published.
    pub data: Box<RawValue>,
}

impl Delivery {
    /// The payload deserialized into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}

/// Messages arriving on one subscribed channel or pattern. Ends when the client
/// disconnects or unsubscribes from the channel.
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
}

impl Subscription {
    /// The next message, or `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// Listeners per subscribed channel or pattern.
type Listeners = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Delivery>>>>>;

fn lock(l: &Listeners) -> MutexGuard<'_, HashMap<String, Vec<mpsc::Sender<Delivery>>>> {
    l.lock().unwrap_or_else(|e| e.into_inner())
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
        let handshake = json!({
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["in-process"],
        });
        let reply = request(self, handshake).await?;
        let client_id = reply.client_id.ok_or(ClientError::NoReply)?;
        let listeners: Listeners = Arc::default();
        let socket = Arc::new(self.socket(None));
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
async fn request<E: Engine>(server: &Server<E>, message: Value) -> Result<Message, ClientError> {
    let batch = decode_batch(message.to_string().as_bytes()).map_err(|_| ClientError::NoReply)?;
    let reply = server.process(batch, &Context::local()).await.into_iter().next();
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
    let connect =
        json!({"channel": "/meta/connect", "clientId": client_id, "connectionType": "in-process"});
    loop {
        let Ok(batch) = decode_batch(connect.to_string().as_bytes()) else { return };
        let replies = server.process(batch, &Context::on_socket(&socket)).await;
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
        for bytes in messages {
            let Ok(message) = serde_json::from_slice::<Message>(&bytes) else { continue };
            let (Some(name), Some(data)) = (message.channel, message.data) else { continue };
            let targets: Vec<mpsc::Sender<Delivery>> = {
                let map = lock(&listeners);
                channel::expand(&name)
                    .iter()
                    .filter_map(|key| map.get(key))
                    .flatten()
                    .cloned()
                    .collect()
            };
            for tx in targets {
                let _ = tx.send(Delivery { channel: name.clone(), data: data.clone() }).await;
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
            let message = json!({"channel": "/meta/subscribe", "clientId": self.client_id, "subscription": channel});
            request(&self.server, message).await?;
        }
        lock(&self.listeners).entry(channel.to_owned()).or_default().push(tx);
        Ok(Subscription { rx })
    }

    /// Unsubscribes from a channel; its subscriptions end.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        lock(&self.listeners).remove(channel);
        let message = json!({"channel": "/meta/unsubscribe", "clientId": self.client_id, "subscription": channel});
        request(&self.server, message).await.map(drop)
    }

    /// Publishes `data` to `channel`.
    pub async fn publish(&self, channel: &str, data: &impl Serialize) -> Result<(), ClientError> {
        let message = json!({"channel": channel, "data": serde_json::to_value(data)?, "clientId": self.client_id});
        request(&self.server, message).await.map(drop)
    }

    /// Ends the session; every subscription ends.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        let message = json!({"channel": "/meta/disconnect", "clientId": self.client_id});
        request(&self.server, message).await.map(drop)
    }
}

impl<E: Engine> Drop for LocalClient<E> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
