//! One timer structure for every client's expiry, instead of a task per client.
//!
//! Clients are filed in buckets by their expiry time, rounded up to a
//! granularity (a sixteenth of the timeout, from 1 ms to 1 s). One sweeper task
//! sleeps until the earliest bucket is due, then looks at each client in it: a
//! client whose expiry has passed is destroyed; one that was pinged since (a
//! ping only moves the client's expiry time, it never touches the buckets) is
//! filed again under its new time. A client is looked at about once per
//! lifetime, however often it pings, and is destroyed at most a granule late.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ClientId;

pub(crate) struct Expiry {
    /// Bucket deadlines are `base + k × granularity`.
    base: Instant,
    granularity: Duration,
    buckets: Mutex<BTreeMap<Instant, Vec<ClientId>>>,
    /// Told when a bucket earlier than every other is added.
    pub(crate) earlier: Notify,
}

impl Expiry {
    pub(crate) fn new(timeout: Duration) -> Self {
        let granularity = (timeout / 16).clamp(Duration::from_millis(1), Duration::from_secs(1));
        Self {
            base: Instant::now(),
            granularity,
            buckets: Mutex::default(),
            earlier: Notify::new(),
        }
    }

    /// Files `client` to be looked at once `at` has passed.
    pub(crate) fn file(&self, client: ClientId, at: Instant) {
        let g = self.granularity.as_nanos().max(1);
        let since = at.saturating_duration_since(self.base).as_nanos();
        let slots = since.div_ceil(g);
        let due = self.base + Duration::from_nanos(u64::try_from(slots * g).unwrap_or(u64::MAX));
        let mut buckets = crate::memory::lock(&self.buckets);
        let first = buckets.keys().next().is_none_or(|&k| due < k);
        buckets.entry(due).or_default().push(client);
        drop(buckets);
        if first {
            self.earlier.notify_one();
        }
    }

    /// When the earliest bucket is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        crate::memory::lock(&self.buckets).keys().next().copied()
    }

    /// Takes every client filed in a bucket due by `now`.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<ClientId> {
        let mut buckets = crate::memory::lock(&self.buckets);
        let later = buckets.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut *buckets, later);
        drop(buckets);
        due.into_values().flatten().collect()
    }

    /// Clients filed (some may be gone already: they are dropped when due).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        crate::memory::lock(&self.buckets).values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ClientId {
        ClientId::from_random_bytes([n; 20])
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_is_due_at_its_time_rounded_up_to_a_granule() {
        // Timeout 160 ms: granules of 10 ms.
        let expiry = Expiry::new(Duration::from_millis(160));
        let start = expiry.base;
        expiry.file(id(1), start + Duration::from_millis(25));
        expiry.file(id(2), start + Duration::from_millis(30));
        expiry.file(id(3), start + Duration::from_millis(31));
        assert_eq!(expiry.next_due(), Some(start + Duration::from_millis(30)));
        assert!(expiry.take_due(start + Duration::from_millis(29)).is_empty());
        assert_eq!(expiry.take_due(start + Duration::from_millis(30)), [id(1), id(2)]);
        assert_eq!(expiry.len(), 1);
        assert_eq!(expiry.next_due(), Some(start + Duration::from_millis(40)));
        assert_eq!(expiry.take_due(start + Duration::from_secs(9)), [id(3)]);
        assert_eq!(expiry.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_bucket_is_announced() {
        let expiry = Expiry::new(Duration::from_secs(16));
        let start = expiry.base;
        expiry.file(id(1), start + Duration::from_secs(10));
        expiry.earlier.notified().await; // the first bucket is the earliest
        expiry.file(id(2), start + Duration::from_secs(20));
        expiry.file(id(3), start + Duration::from_secs(5));
        expiry.earlier.notified().await;
        assert_eq!(expiry.next_due(), Some(start + Duration::from_secs(5)));
    }
}
