//! The node-side router: the clients this node holds, their subscriptions and
//! queues, and a ring of recent bus entries. Everything here is synchronous and
//! runs under one lock that is never held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use faye_engine::{Channel, ClientId, EncodedMessage, EngineEvent};
use tokio::time::Instant;

use crate::stream::{Entry, Kind, StreamId};

/// A client this node holds: where its connection was last seen.
#[derive(Debug)]
pub(crate) struct Local {
    /// Every bus entry up to here has been considered for this client.
    pub(crate) cursor: StreamId,
    pub(crate) subs: HashSet<String>,
    pub(crate) queue: Vec<EncodedMessage>,
    /// The JSON bytes in `queue`.
    pub(crate) queued_bytes: usize,
    /// The `Own` entry this node wrote when it took the client over; an `Own` by
    /// another node that is newer means the client moved away.
    pub(crate) owned_at: StreamId,
    /// The last messages handed out for a long-poll connect: handed out again if
    /// the same connect asks again (its answer was lost).
    pub(crate) answered: Option<Answered>,
    /// The cursor last written to Redis, and when.
    pub(crate) persisted: StreamId,
    pub(crate) persisted_at: Instant,
    /// When this node started holding the client.
    pub(crate) since: Instant,
}

/// An answer to a long-poll connect, kept until the client's next request.
#[derive(Debug)]
pub(crate) struct Answered {
    /// The connect's message id.
    pub(crate) request: String,
    pub(crate) messages: Vec<EncodedMessage>,
    /// What the client had surely read before this answer.
    pub(crate) from: StreamId,
}

impl Local {
    pub(crate) fn new(cursor: StreamId, subs: HashSet<String>, owned_at: StreamId) -> Self {
        Self {
            cursor,
            subs,
            queue: Vec::new(),
            queued_bytes: 0,
            owned_at,
            answered: None,
            persisted: cursor,
            persisted_at: Instant::now(),
            since: Instant::now(),
        }
    }

    fn matches(&self, channel: &Channel) -> bool {
        channel.expand().iter().any(|key| self.subs.contains(key))
    }
}

/// What routing asks the engine to do once the lock is released.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Clients with new messages (tell the listener).
    pub(crate) mail: Vec<ClientId>,
    /// Clients whose queue was full when a message arrived (destroy them).
    pub(crate) too_slow: Vec<ClientId>,
    /// What other nodes did, for this node's monitoring (each node reports its
    /// own operations itself), in bus order. Includes `Close` for a client another
    /// node destroyed, so that this node closes its connections.
    pub(crate) events: Vec<EngineEvent>,
}

#[derive(Debug)]
pub(crate) struct Router {
    node: String,
    max_queue: usize,
    max_queue_bytes: usize,
    /// The newest entry routed.
    pub(crate) last: StreamId,
    /// The most recent entries, so that a client taken over by this node is caught
    /// up without a read from Redis. Covers `(ring_floor, last]`.
    ring: VecDeque<Arc<Entry>>,
    ring_floor: StreamId,
    ring_capacity: usize,
    pub(crate) clients: HashMap<ClientId, Local>,
    /// Channel or pattern → the local clients subscribed to it.
    index: HashMap<String, HashSet<ClientId>>,
}

impl Router {
    pub(crate) fn new(node: String, start: StreamId, ring_capacity: usize) -> Self {
        Self {
            node,
            max_queue: usize::MAX,
            max_queue_bytes: usize::MAX,
            last: start,
            ring: VecDeque::new(),
            ring_floor: start,
            ring_capacity,
            clients: HashMap::new(),
            index: HashMap::new(),
        }
    }

    pub(crate) fn set_max_queue(&mut self, max_queue: usize, max_queue_bytes: usize) {
        self.max_queue = max_queue;
        self.max_queue_bytes = max_queue_bytes;
    }

    /// Routes one entry read from the bus, if it is newer than the last one routed.
    pub(crate) fn route(&mut self, entry: Arc<Entry>, fx: &mut Effects) {
        if entry.id <= self.last {
            return;
        }
        self.apply(&entry, fx);
        self.last = entry.id;
        self.ring.push_back(entry);
        while self.ring.len() > self.ring_capacity {
            if let Some(old) = self.ring.pop_front() {
                self.ring_floor = old.id;
            }
        }
    }

    fn apply(&mut self, entry: &Entry, fx: &mut Effects) {
        match &entry.kind {
            Kind::Message { channel, message } => {
                let Some(channel) = Channel::parse(channel) else {
                    return;
                };
                let mut recipients: Vec<ClientId> = Vec::new();
                let mut hits = 0;
                for key in &channel.expand() {
                    if let Some(ids) = self.index.get(key) {
                        recipients.extend(ids.iter().copied());
                        hits += 1;
                    }
                }
                if hits > 1 {
                    recipients.sort_unstable();
                    recipients.dedup();
                }
                for id in recipients {
                    let Some(local) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    if entry.id <= local.cursor {
                        continue;
                    }
                    let bytes = local.queued_bytes + message.json().len();
                    if local.queue.len() >= self.max_queue || bytes > self.max_queue_bytes {
                        if !fx.too_slow.contains(&id) {
                            fx.too_slow.push(id);
                        }
                        continue;
                    }
                    local.queue.push(message.clone());
                    local.queued_bytes = bytes;
                    fx.mail.push(id);
                }
            }
            Kind::Handshake { client, node } => {
                if node != &self.node {
                    fx.events.push(EngineEvent::Handshake(*client));
                }
            }
            Kind::Subscribe { client, channel, node } => {
                self.add_sub(client, channel);
                if node.as_ref().is_some_and(|n| n != &self.node) {
                    fx.events.push(EngineEvent::Subscribe(*client, channel.clone()));
                }
            }
            Kind::Unsubscribe { client, channel, node } => {
                self.remove_sub(client, channel);
                if node.as_ref().is_some_and(|n| n != &self.node) {
                    fx.events.push(EngineEvent::Unsubscribe(*client, channel.clone()));
                }
            }
            Kind::Own { client, node } => {
                let moved = node != &self.node
                    && self.clients.get(client).is_some_and(|l| l.owned_at < entry.id);
                if moved {
                    self.evict(client);
                }
            }
            Kind::Destroyed { client, node, channels } => {
                self.evict(client);
                if node != &self.node {
                    for channel in channels {
                        fx.events.push(EngineEvent::Unsubscribe(*client, channel.clone()));
                    }
                    fx.events.push(EngineEvent::Disconnect(*client));
                    fx.events.push(EngineEvent::Close(*client));
                }
            }
            Kind::Unknown => {}
        }
    }

    fn add_sub(&mut self, client: &ClientId, channel: &str) {
        if let Some(local) = self.clients.get_mut(client)
            && local.subs.insert(channel.to_owned())
        {
            self.index.entry(channel.to_owned()).or_default().insert(*client);
        }
    }

    fn remove_sub(&mut self, client: &ClientId, channel: &str) {
        if let Some(local) = self.clients.get_mut(client)
            && local.subs.remove(channel)
        {
            self.unindex(client, channel);
        }
    }

    fn unindex(&mut self, client: &ClientId, channel: &str) {
        if let Some(ids) = self.index.get_mut(channel) {
            ids.remove(client);
            if ids.is_empty() {
                self.index.remove(channel);
            }
        }
    }

    /// Channels and patterns some held client is subscribed to.
    pub(crate) fn channels(&self) -> usize {
        self.index.len()
    }

    /// Registers a client this node now holds.
    pub(crate) fn insert(&mut self, client: ClientId, local: Local) {
        self.evict(&client);
        for channel in &local.subs {
            self.index.entry(channel.clone()).or_default().insert(client);
        }
        self.clients.insert(client, local);
    }

    /// Forgets a client (moved to another node, or destroyed).
    pub(crate) fn evict(&mut self, client: &ClientId) -> Option<Local> {
        let local = self.clients.remove(client)?;
        for channel in &local.subs {
            self.unindex(client, channel);
        }
        Some(local)
    }

    /// The entries in `(after, last]` if the ring still holds all of them.
    pub(crate) fn recent_since(&self, after: StreamId) -> Option<Vec<Arc<Entry>>> {
        if after < self.ring_floor {
            return None;
        }
        Some(self.ring.iter().filter(|e| e.id > after).cloned().collect())
    }

    /// Takes a client over: the queue is rebuilt from `replay`, the entries after
    /// its cursor up to `last`, starting from the subscriptions read from Redis
    /// (`snapshot`). `snapshot` may already reflect changes that `replay` holds, so
    /// those are undone first and replayed in order: a subscription starts at its
    /// own entry, never earlier. Returns `false` if the replay shows the client
    /// was destroyed.
    pub(crate) fn adopt(
        &mut self,
        client: ClientId,
        cursor: StreamId,
        snapshot: HashSet<String>,
        owned_at: StreamId,
        replay: &[Arc<Entry>],
    ) -> bool {
        let mut subs = snapshot;
        for entry in replay.iter().rev() {
            match &entry.kind {
                Kind::Subscribe { client: c, channel, .. } if *c == client => {
                    subs.remove(channel);
                }
                Kind::Unsubscribe { client: c, channel, .. } if *c == client => {
                    subs.insert(channel.clone());
                }
                _ => {}
            }
        }
        let mut local = Local::new(cursor, subs, owned_at);
        for entry in replay.iter().filter(|e| e.id > cursor && e.id <= self.last) {
            match &entry.kind {
                Kind::Message { channel, message }
                    if Channel::parse(channel).is_some_and(|ch| local.matches(&ch)) =>
                {
                    local.queue.push(message.clone());
                    local.queued_bytes += message.json().len();
                }
                Kind::Subscribe { client: c, channel, .. } if *c == client => {
                    local.subs.insert(channel.clone());
                }
                Kind::Unsubscribe { client: c, channel, .. } if *c == client => {
                    local.subs.remove(channel);
                }
                Kind::Destroyed { client: c, .. } if *c == client => return false,
                _ => {}
            }
        }
        local.cursor = local.cursor.max(self.last);
        self.insert(client, local);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn msg(ms: u64, channel: &str) -> Arc<Entry> {
        let json = format!(r#"{{"channel":"{channel}","data":{ms}}}"#);
        Arc::new(Entry {
            id: id(ms),
            kind: Kind::Message {
                channel: channel.into(),
                message: EncodedMessage::from_json(json.as_bytes()),
            },
        })
    }

    fn client(n: u8) -> ClientId {
        ClientId::from_random_bytes([n; 20])
    }

    #[test]
    fn a_subscription_replayed_on_takeover_starts_at_its_own_entry() {
        let c = client(1);
        let mut router = Router::new("me".into(), id(0), 16);
        let sub = Arc::new(Entry {
            id: id(3),
            kind: Kind::Subscribe { client: c, channel: "/a".into(), node: None },
        });
        let replay = vec![msg(2, "/a"), sub, msg(4, "/a")];
        let mut fx = Effects::default();
        for e in &replay {
            router.route(e.clone(), &mut fx);
        }
        // The snapshot read from Redis already holds the subscription made at 3.
        let snapshot = HashSet::from(["/a".to_owned()]);
        assert!(router.adopt(c, id(1), snapshot, id(9), &replay));
        let queue = &router.clients[&c].queue;
        assert_eq!(queue.len(), 1, "only the publish after the subscription");
        assert_eq!(router.clients[&c].cursor, id(4));
    }

    #[test]
    fn an_own_entry_from_another_node_evicts_only_if_newer_than_ours() {
        let c = client(2);
        let mut router = Router::new("me".into(), id(0), 16);
        router.insert(c, Local::new(id(0), HashSet::new(), id(5)));
        let mut fx = Effects::default();
        let own = |ms, node: &str| {
            Arc::new(Entry { id: id(ms), kind: Kind::Own { client: c, node: node.into() } })
        };
        router.route(own(4, "other"), &mut fx);
        assert!(router.clients.contains_key(&c), "an older takeover does not count");
        router.route(own(5, "me"), &mut fx);
        router.route(own(6, "other"), &mut fx);
        assert!(!router.clients.contains_key(&c));
    }

    #[test]
    fn the_ring_says_when_it_no_longer_covers_a_cursor() {
        let mut router = Router::new("me".into(), id(0), 2);
        let mut fx = Effects::default();
        for ms in 1..=4 {
            router.route(msg(ms, "/x"), &mut fx);
        }
        assert!(router.recent_since(id(1)).is_none());
        assert_eq!(router.recent_since(id(2)).unwrap().len(), 2);
    }
}
