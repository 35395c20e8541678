//! The in-memory engine: one process, Faye's default.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::expiry::Expiry;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, EngineEvent,
    EngineStats, Subscribed, generate_client_id,
};

/// Most room a drained queue keeps for the next messages (see `take_queue`).
const KEPT_QUEUE_CAPACITY: usize = 32;

/// The in-memory engine.
///
/// Routing is Faye's: `expand(channel)` and one hash lookup per key, never a scan.
/// Maps are lock-free for readers (papaya); each client and each channel's
/// subscriber set has its own small lock, and none is held across an `.await`.
/// Each client has a timer task that destroys it 2T after its last ping.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use faye_engine::{Channel, EncodedMessage, Engine, MemoryEngine};
/// let engine = MemoryEngine::new();
/// # engine.start(faye_engine::EngineContext { listener: std::sync::Arc::new(Nop), timeout: std::time::Duration::from_secs(60), limits: Default::default() });
/// let id = engine.create_client().await.unwrap();
/// let (pattern, room) = (Channel::parse("/chat/*").unwrap(), Channel::parse("/chat/room").unwrap());
/// engine.subscribe(&id, &pattern).await.unwrap();
/// let message = EncodedMessage::from_json(br#"{"channel":"/chat/room","data":1}"#);
/// engine.publish(&room, message).await.unwrap();
/// assert_eq!(engine.take_queue(&id, None).await.unwrap().len(), 1);
/// # }
/// # struct Nop;
/// # impl faye_engine::EngineListener for Nop {
/// #     fn mail(&self, _: &faye_engine::ClientId) {}
/// #     fn event(&self, _: faye_engine::EngineEvent) {}
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryEngine {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    ctx: OnceLock<EngineContext>,
    clients: papaya::HashMap<ClientId, Arc<ClientEntry>, foldhash::fast::RandomState>,
    channels: papaya::HashMap<String, Arc<Subscribers>>,
    /// Every client's expiry, made by `start` (its granularity follows the
    /// timeout), and the one task that destroys expired clients (`sweep`).
    expiry: OnceLock<Arc<Expiry>>,
    sweeper: OnceLock<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.get() {
            sweeper.abort();
        }
    }
}

struct ClientEntry {
    state: Mutex<ClientState>,
}

struct ClientState {
    channels: ChannelSet,
    queue: VecDeque<EncodedMessage>,
    /// The JSON bytes in `queue`.
    queued_bytes: usize,
    /// The last messages taken for a long-poll connect, and its id: handed out
    /// again if the same connect asks again (see [`Engine::take_queue`]).
    answered: Option<Box<(String, Vec<EncodedMessage>)>>,
    expires_at: Instant,
    destroyed: bool,
}

/// A client's channels, sorted. Most clients have a few: a `HashSet` of one
/// costs a table of four (about 140 bytes), this one slot and the name.
#[derive(Default)]
struct ChannelSet(Vec<Box<str>>);

impl ChannelSet {
    fn find(&self, channel: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|c| (**c).cmp(channel))
    }

    fn contains(&self, channel: &str) -> bool {
        self.find(channel).is_ok()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, channel: &str) {
        if let Err(at) = self.find(channel) {
            if self.0.len() == self.0.capacity() {
                // Grows by half, from one: `Vec` would start at four.
                self.0.reserve_exact((self.0.len() / 2).max(1));
            }
            self.0.insert(at, channel.into());
        }
    }

    fn remove(&mut self, channel: &str) -> bool {
        self.find(channel).map(|at| self.0.remove(at)).is_ok()
    }
}

impl IntoIterator for ChannelSet {
    type Item = String;
    type IntoIter = std::iter::Map<std::vec::IntoIter<Box<str>>, fn(Box<str>) -> String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(String::from)
    }
}

/// The clients subscribed to one channel or pattern. `dead` marks a set that was
/// emptied and is being removed from the map: a subscriber that finds it retries.
#[derive(Default)]
struct Subscribers {
    set: Mutex<SubscriberSet>,
}

#[derive(Default)]
struct SubscriberSet {
    ids: HashSet<ClientId>,
    dead: bool,
}

/// A poisoned lock only means another thread panicked mid-update of plain data;
/// the data is still usable, and one panic must not take every client down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("clients", &self.inner.clients.len())
            .field("channels", &self.inner.channels.len())
            .finish()
    }
}

impl MemoryEngine {
    /// A new, empty engine. The server starts it with [`Engine::start`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    fn ctx(&self) -> Result<&EngineContext, EngineError> {
        self.ctx.get().ok_or(EngineError::Shutdown)
    }

    fn emit(&self, event: EngineEvent) {
        if let Some(ctx) = self.ctx.get() {
            ctx.listener.event(event);
        }
    }

    fn entry(&self, id: &ClientId) -> Option<Arc<ClientEntry>> {
        self.clients.pin().get(id).cloned()
    }

    fn remove_subscriber(&self, channel: &str, id: &ClientId) {
        let channels = self.channels.pin();
        if let Some(subs) = channels.get(channel) {
            let mut set = lock(&subs.set);
            set.ids.remove(id);
            if set.ids.is_empty() && !set.dead {
                set.dead = true;
                channels.remove(channel);
            }
        }
    }

    fn add_subscriber(&self, channel: &str, id: ClientId) {
        let channels = self.channels.pin();
        loop {
            let subs = channels.get_or_insert_with(channel.to_owned(), Default::default);
            let mut set = lock(&subs.set);
            if !set.dead {
                set.ids.insert(id);
                return;
            }
        }
    }

    fn destroy(&self, id: &ClientId) {
        let Some(entry) = self.clients.pin().remove(id).cloned() else {
            return;
        };
        let channels = {
            let mut st = lock(&entry.state);
            st.destroyed = true;
            st.queue.clear();
            st.queued_bytes = 0;
            std::mem::take(&mut st.channels)
        };
        for channel in channels {
            self.remove_subscriber(&channel, id);
            self.emit(EngineEvent::Unsubscribe(*id, channel));
        }
        self.emit(EngineEvent::Disconnect(*id));
        self.emit(EngineEvent::Close(*id));
    }
}

/// Destroys clients as they expire, for as long as the engine lives: sleeps
/// until the earliest bucket of [`Expiry`] is due (or an earlier one is added),
/// then destroys its clients that have really expired and files the others
/// (pinged since) again.
async fn sweep(inner: Weak<Inner>, expiry: Arc<Expiry>) {
    loop {
        let earlier = expiry.earlier.notified();
        match expiry.next_due() {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = earlier => continue,
                }
            }
            None => {
                earlier.await;
                continue;
            }
        }
        let now = Instant::now();
        let due = expiry.take_due(now);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        for id in due {
            let Some(entry) = inner.entry(&id) else {
                continue;
            };
            let expires_at = lock(&entry.state).expires_at;
            if expires_at <= now {
                inner.destroy(&id);
            } else {
                expiry.file(id, expires_at);
            }
        }
    }
}

impl Engine for MemoryEngine {
    fn start(&self, ctx: EngineContext) {
        let _ = self.inner.expiry.set(Arc::new(Expiry::new(ctx.timeout)));
        let _ = self.inner.ctx.set(ctx);
    }

    async fn create_client(&self) -> Result<ClientId, EngineError> {
        let lifetime = self.inner.ctx()?.timeout * 2;
        let expiry = self.inner.expiry.get().ok_or(EngineError::Shutdown)?;
        // Started here rather than in `start`, which may run outside a runtime.
        self.inner.sweeper.get_or_init(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.inner), expiry.clone())).abort_handle()
        });
        let expires_at = Instant::now() + lifetime;
        let entry = Arc::new(ClientEntry {
            state: Mutex::new(ClientState {
                channels: ChannelSet::default(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                answered: None,
                expires_at,
                destroyed: false,
            }),
        });
        let id = loop {
            let id = generate_client_id();
            // 160 random bits never collide in practice; regenerate if they do.
            if self.inner.clients.pin().try_insert(id, entry.clone()).is_ok() {
                break id;
            }
        };
        expiry.file(id, expires_at);
        self.inner.emit(EngineEvent::Handshake(id));
        Ok(id)
    }

    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        // Expired but not yet swept (at most a granule): gone all the same.
        Ok(self.inner.entry(client).is_some_and(|e| lock(&e.state).expires_at > Instant::now()))
    }

    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        self.inner.destroy(client);
        Ok(())
    }

    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        let lifetime = self.inner.ctx()?.timeout * 2;
        if let Some(entry) = self.inner.entry(client) {
            lock(&entry.state).expires_at = Instant::now() + lifetime;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> Result<Subscribed, EngineError> {
        let channel = channel.as_str();
        let max = self.inner.ctx()?.limits.max_subscriptions;
        let Some(entry) = self.inner.entry(client) else {
            return Ok(Subscribed::Unchanged);
        };
        {
            // Lock order everywhere: client, then channel.
            let mut st = lock(&entry.state);
            if st.destroyed || st.channels.contains(channel) {
                return Ok(Subscribed::Unchanged);
            }
            if st.channels.len() >= max {
                return Ok(Subscribed::LimitReached);
            }
            self.inner.add_subscriber(channel, *client);
            st.channels.insert(channel);
        }
        self.inner.emit(EngineEvent::Subscribe(*client, channel.to_owned()));
        Ok(Subscribed::Added)
    }

    async fn unsubscribe(&self, client: &ClientId, channel: &Channel) -> Result<bool, EngineError> {
        let channel = channel.as_str();
        let Some(entry) = self.inner.entry(client) else {
            return Ok(false);
        };
        {
            let mut st = lock(&entry.state);
            if !st.channels.remove(channel) {
                return Ok(false);
            }
            self.inner.remove_subscriber(channel, client);
        }
        self.inner.emit(EngineEvent::Unsubscribe(*client, channel.to_owned()));
        Ok(true)
    }

    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        let mut recipients: Vec<ClientId> = Vec::new();
        {
            let channels = self.inner.channels.pin();
            let mut hits = 0;
            for key in &channel.expand() {
                if let Some(subs) = channels.get(key) {
                    recipients.extend(lock(&subs.set).ids.iter().copied());
                    hits += 1;
                }
            }
            // Several matching patterns may name the same client: deliver once.
            if hits > 1 {
                recipients.sort_unstable();
                recipients.dedup();
            }
        }
        let ctx = self.inner.ctx()?;
        let mut too_slow = Vec::new();
        {
            let clients = self.inner.clients.pin();
            // Those queued for stay in `recipients`, and are told after the loop.
            recipients.retain(|id| {
                let Some(entry) = clients.get(id) else {
                    return false;
                };
                let mut st = lock(&entry.state);
                if st.destroyed {
                    return false;
                }
                let bytes = st.queued_bytes + message.json().len();
                if st.queue.len() >= ctx.limits.max_queue || bytes > ctx.limits.max_queue_bytes {
                    too_slow.push(*id);
                    return false;
                }
                st.queue.push_back(message.clone());
                st.queued_bytes = bytes;
                true
            });
        }
        ctx.listener.mail_all(&recipients);
        for id in too_slow {
            tracing::warn!(
                client = id.log_tag(),
                "queue full: disconnecting a client too slow to keep up"
            );
            metrics::counter!(crate::SLOW_CONSUMERS_METRIC).increment(1);
            self.inner.destroy(&id);
        }
        Ok(())
    }

    async fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> Result<Vec<EncodedMessage>, EngineError> {
        Ok(self
            .inner
            .entry(client)
            .map(|e| {
                let mut st = lock(&e.state);
                st.queued_bytes = 0;
                // The last answer's record is reused for the next (a long-poll
                // client's every connect has a new id): no allocation per answer.
                let (mut taken, spare) = match (st.answered.take(), request) {
                    (Some(mut answered), Some(id)) if answered.0 == id => {
                        (std::mem::take(&mut answered.1), Some(answered))
                    }
                    (spare, _) => (Vec::with_capacity(st.queue.len()), spare),
                };
                // Drained rather than taken, so a busy client's queue keeps its
                // room instead of growing again from nothing on every publish;
                // a queue that grew past a few dozen gives its room back.
                taken.extend(st.queue.drain(..));
                if st.queue.capacity() > KEPT_QUEUE_CAPACITY {
                    st.queue = VecDeque::new();
                }
                if let Some(id) = request.filter(|_| !taken.is_empty()) {
                    let mut answered = spare.unwrap_or_default();
                    answered.0.clear();
                    answered.0.push_str(id);
                    answered.1.clear();
                    answered.1.shrink_to(taken.len().max(KEPT_QUEUE_CAPACITY));
                    answered.1.extend(taken.iter().cloned());
                    st.answered = Some(answered);
                }
                taken
            })
            .unwrap_or_default())
    }

    fn stats(&self) -> EngineStats {
        let queued: usize =
            self.inner.clients.pin().values().map(|e| lock(&e.state).queue.len()).sum();
        EngineStats::new(self.inner.channels.pin().len() as u64, queued as u64)
    }

    async fn shutdown(&self) {
        if let Some(sweeper) = self.inner.sweeper.get() {
            sweeper.abort();
        }
        self.inner.clients.pin().clear();
        self.inner.channels.pin().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelSet;

    #[test]
    fn a_channel_set_holds_each_channel_once_and_forgets_removed_ones() {
        let mut set = ChannelSet::default();
        for channel in ["/b", "/a", "/c/**", "/a"] {
            set.insert(channel);
        }
        assert_eq!(set.len(), 3);
        assert!(set.contains("/a") && set.contains("/c/**") && !set.contains("/c"));
        assert_eq!(set.0.capacity(), 3, "grown by half, from one");
        assert!(set.remove("/b"));
        assert!(!set.remove("/b"));
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["/a", "/c/**"]);
    }
}
