//! The in-process client (Faye's `server.getClient()`): how a back end publishes to
//! browsers and listens to what they send, with no HTTP in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use faye_engine::{ClientId, Engine};
pub use faye_protocol::ReceivedMessage;
use faye_protocol::{Channel, Message};
use serde::Serialize;
use serde_json::json;
use serde_json::value::to_raw_value;
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

/// Messages arriving on one subscribed channel or pattern. Ends when the client
/// disconnects or unsubscribes from the channel, or when this subscription falls
/// [`SUBSCRIPTION_BUFFER`] messages behind ([`Subscription::fell_behind`]): a slow
/// subscription never holds up the client's others, nor its session.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<ReceivedMessage>,
    behind: Arc<AtomicBool>,
}

impl Subscription {
    /// The next message, or `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<ReceivedMessage> {
        self.rx.recv().await
    }

    /// Whether the subscription was ended because it had [`SUBSCRIPTION_BUFFER`]
    /// messages waiting when another arrived (the messages already buffered are
    /// still received first).
    pub fn fell_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }
}

/// The sending side of one [`Subscription`].
#[derive(Debug)]
struct Listener {
    tx: mpsc::Sender<ReceivedMessage>,
    behind: Arc<AtomicBool>,
}

/// Listeners per subscribed channel or pattern.
type Listeners = Arc<Mutex<HashMap<String, Vec<Listener>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets the senders of dropped [`Subscription`]s, each of which would otherwise
/// keep its channel's buffer for the life of the client. A channel left with none
/// stays subscribed on the server until [`LocalClient::unsubscribe`].
fn prune(map: &mut HashMap<String, Vec<Listener>>) {
    for listeners in map.values_mut() {
        listeners.retain(|l| !l.tx.is_closed());
    }
}

/// A client inside the server process. It goes through the server's extensions
/// like any client, but with no request, so it may also subscribe to `/meta/**`
/// and `/service/**` (to serve what remote clients publish there).
///
/// Its session survives what remote clients do: a slow subscription only ends
/// itself, and if the session is ever lost (destroyed by an extension or an
/// operator, say), the client handshakes again and resubscribes every channel by
/// itself, under a new [`LocalClient::client_id`]; messages published in between
/// are missed.
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
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// What the client's handle and its background task share.
#[derive(Debug, Default)]
struct Shared {
    client_id: Mutex<String>,
    listeners: Listeners,
}

impl Shared {
    fn client_id(&self) -> String {
        lock(&self.client_id).clone()
    }
}

/// Messages buffered per subscription before it counts as fallen behind.
pub const SUBSCRIPTION_BUFFER: usize = 10_000;

/// How long the client waits before handshaking again after a failed attempt.
const REHANDSHAKE_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl<E: Engine> Server<E> {
    /// A new in-process client, already handshaken and connected.
    pub async fn client(&self) -> Result<LocalClient<E>, ClientError> {
        let shared = Arc::new(Shared::default());
        *lock(&shared.client_id) = handshake(self).await?;
        let task = tokio::spawn(run(self.clone(), shared.clone()));
        Ok(LocalClient { server: self.clone(), shared, task: task.abort_handle() })
    }
}

/// A new session for the in-process client; its id.
async fn handshake<E: Engine>(server: &Server<E>) -> Result<String, ClientError> {
    let handshake = Message {
        version: Some(json!(faye_protocol::BAYEUX_VERSION)),
        supported_connection_types: Some(json!(["in-process"])),
        ..Message::on("/meta/handshake")
    };
    request(server, handshake).await?.client_id.ok_or(ClientError::NoReply)
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

/// The client's life: connected and delivering while its session lasts; when the
/// session is lost, a new one with the same subscriptions. Ends with the server.
async fn run<E: Engine>(server: Server<E>, shared: Arc<Shared>) {
    loop {
        let socket = Socket::trusted(server.clone());
        tokio::select! {
            () = connect_loop(&server, &socket, shared.client_id()) => {}
            () = pump(&socket, &shared.listeners) => {}
        }
        drop(socket);
        if server.is_shutting_down() {
            break;
        }
        let id = shared.client_id();
        let exists = match ClientId::parse(&id) {
            Some(id) => server.engine().client_exists(&id).await.unwrap_or(true),
            None => false,
        };
        if exists {
            // Still there (an engine hiccup): connect again.
            tokio::time::sleep(REHANDSHAKE_PAUSE).await;
            continue;
        }
        tracing::warn!(
            client = id.get(..6).unwrap_or_default(),
            "the in-process client's session ended: handshaking again"
        );
        if !rejoin(&server, &shared).await {
            break;
        }
    }
    // The client is over: end every subscription.
    lock(&shared.listeners).clear();
}

/// Handshakes again and resubscribes every channel a subscription is still open
/// on; false if the server shut down meanwhile.
async fn rejoin<E: Engine>(server: &Server<E>, shared: &Shared) -> bool {
    loop {
        if server.is_shutting_down() {
            return false;
        }
        match handshake(server).await {
            Ok(id) => {
                *lock(&shared.client_id) = id.clone();
                let channels: Vec<String> = {
                    let mut listeners = lock(&shared.listeners);
                    prune(&mut listeners);
                    listeners.retain(|_, l| !l.is_empty());
                    listeners.keys().cloned().collect()
                };
                for channel in channels {
                    let message = Message {
                        client_id: Some(id.clone()),
                        subscription: Some(json!(channel)),
                        ..Message::on("/meta/subscribe")
                    };
                    if let Err(e) = request(server, message).await {
                        tracing::warn!(%channel, error = %e, "could not resubscribe");
                    }
                }
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the in-process client could not handshake");
                tokio::time::sleep(REHANDSHAKE_PAUSE).await;
            }
        }
    }
}

/// Keeps a `/meta/connect` held on the client's socket, which binds it and keeps
/// the session alive; returns when a connect fails.
async fn connect_loop<E: Engine>(server: &Server<E>, socket: &Socket<E>, client_id: String) {
    let connect = Message {
        client_id: Some(client_id),
        connection_type: Some("in-process".to_owned()),
        ..Message::on("/meta/connect")
    };
    loop {
        let replies = server.process(vec![connect.clone()], &Context::on_socket(socket)).await;
        let ok = matches!(replies.first(), Some(Reply::Message(m)) if m.successful == Some(true));
        if !ok || server.is_shutting_down() {
            return;
        }
    }
}

/// Hands pushed messages to the subscriptions they match, never waiting for one:
/// the engine's queue for this client is drained as fast as it fills, whatever
/// the subscriptions do. Returns when the socket is closed.
async fn pump<E: Engine>(socket: &Socket<E>, listeners: &Mutex<HashMap<String, Vec<Listener>>>) {
    loop {
        let messages = match socket.next_push().await {
            Push::Messages(messages) => messages,
            // Its connects are waited for (`connect_loop`), never parked.
            Push::Replies(_) => continue,
            Push::Closed | Push::Unbound => return,
        };
        for encoded in messages {
            // Deliveries reach this process as the bytes every recipient shares.
            let Ok(message) = encoded.decode() else { continue };
            let (Some(name), Some(data)) = (message.channel, message.data) else { continue };
            let Some(channel) = Channel::parse(&name) else { continue };
            let mut map = lock(listeners);
            let mut gone = false;
            for key in &channel.expand() {
                for listener in map.get(key).into_iter().flatten() {
                    let received = ReceivedMessage { channel: name.clone(), data: data.clone() };
                    match listener.tx.try_send(received) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!(channel = %key, "an in-process subscription fell behind: ending it");
                            listener.behind.store(true, Ordering::Relaxed);
                            gone = true;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => gone = true,
                    }
                }
            }
            if gone {
                // A full subscription's sender is dropped here: it ends once drained.
                for listeners in map.values_mut() {
                    listeners.retain(|l| !l.tx.is_closed() && !l.behind.load(Ordering::Relaxed));
                }
            }
        }
    }
}

impl<E: Engine> LocalClient<E> {
    /// The client's id (a new one after the client had to handshake again).
    pub fn client_id(&self) -> String {
        self.shared.client_id()
    }

    /// Subscribes to a channel or pattern. Several subscriptions to the same channel
    /// each get every message; the server is asked only once.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let first = !lock(&self.shared.listeners).contains_key(channel);
        if first {
            request(&self.server, self.message("/meta/subscribe", Some(channel))).await?;
        }
        let behind = Arc::new(AtomicBool::new(false));
        let mut listeners = lock(&self.shared.listeners);
        prune(&mut listeners);
        listeners
            .entry(channel.to_owned())
            .or_default()
            .push(Listener { tx, behind: behind.clone() });
        Ok(Subscription { rx, behind })
    }

    /// Unsubscribes from a channel; its subscriptions end.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        lock(&self.shared.listeners).remove(channel);
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
            client_id: Some(self.client_id()),
            subscription: subscription.map(|s| json!(s)),
            ..Message::on(channel)
        }
    }
}

impl<E: Engine> std::fmt::Debug for LocalClient<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<String> = lock(&self.shared.listeners).keys().cloned().collect();
        f.debug_struct("LocalClient")
            .field("client_id", &self.client_id())
            .field("channels", &channels)
            .finish_non_exhaustive()
    }
}

impl<E: Engine> Drop for LocalClient<E> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use faye_engine::MemoryEngine;

    use super::*;

    fn senders(client: &LocalClient<MemoryEngine>, channel: &str) -> usize {
        lock(&client.shared.listeners).get(channel).map_or(0, Vec::len)
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

#[cfg(test)]
mod robustness {
    use std::time::Duration;

    use faye_engine::MemoryEngine;

    use super::*;

    /// A subscription nobody reads ends itself once it is full; the client's other
    /// subscriptions get everything, and its session lives on.
    #[tokio::test]
    async fn a_slow_subscription_ends_itself_and_nothing_else() {
        let options = crate::ServerOptions::default().max_queue_per_client(100);
        let server = Server::new(MemoryEngine::new(), options);
        let client = server.client().await.unwrap();
        let id = client.client_id();
        let slow = client.subscribe("/feed").await.unwrap();
        let mut fast = client.subscribe("/feed").await.unwrap();
        let publisher = server.client().await.unwrap();
        let total = SUBSCRIPTION_BUFFER + 50;
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while n < total {
                let m = fast.recv().await.expect("the fast subscription lives");
                assert_eq!(m.data_as::<usize>().unwrap(), n);
                n += 1;
            }
            fast
        });
        for n in 0..total {
            publisher.publish("/feed", &n).await.unwrap();
            if n % 50 == 0 {
                // Let the client's task run, as a busy server would.
                tokio::task::yield_now().await;
            }
        }
        let fast = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        assert!(slow.fell_behind());
        assert!(!fast.fell_behind());
        assert_eq!(client.client_id(), id, "the session was not lost");
        let mut slow = slow;
        let mut buffered = 0;
        while slow.recv().await.is_some() {
            buffered += 1;
        }
        assert_eq!(buffered, SUBSCRIPTION_BUFFER, "what was buffered is still delivered");
    }

    /// A lost session is replaced: a new id, the same subscriptions.
    #[tokio::test]
    async fn a_lost_session_is_replaced_and_resubscribed() {
        let server = Server::new(MemoryEngine::new(), Default::default());
        let client = server.client().await.unwrap();
        let mut news = client.subscribe("/news").await.unwrap();
        let old = client.client_id();
        server.engine().destroy_client(&ClientId::parse(&old).unwrap()).await.unwrap();
        let publisher = server.client().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                publisher.publish("/news", &"again").await.unwrap();
                tokio::select! {
                    m = news.recv() => break m,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await
        .expect("the subscription works again");
        assert_eq!(got.unwrap().data_as::<String>().unwrap(), "again");
        assert_ne!(client.client_id(), old);
        // The client's messages now carry the new id.
        client.publish("/news", &"from the new session").await.unwrap();
    }
}
