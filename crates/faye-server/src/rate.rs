//! Optional publish rate limits, per client: token buckets refilled continuously,
//! holding one second's worth at most.
//!
//! Buckets exist only for clients this server handshook (created at handshake,
//! dropped with the session), so made-up client ids cost nothing; publishes
//! without a client of this server share one "anonymous" bucket, which is what
//! stops an anonymous flood.

use std::sync::{Mutex, MutexGuard, OnceLock};

use faye_engine::ClientId;
use tokio::time::Instant;

/// Publish rate limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PublishRate {
    pub(crate) messages: Option<f64>,
    pub(crate) bytes: Option<f64>,
}

impl PublishRate {
    fn is_unlimited(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }
}

#[derive(Debug)]
struct Bucket {
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: &PublishRate) -> Self {
        Self {
            messages: rate.messages.unwrap_or(0.0),
            bytes: rate.bytes.unwrap_or(0.0),
            at: Instant::now(),
        }
    }

    /// Takes one message of `size` bytes if the client is within its rate. A
    /// message larger than a second's bytes goes through when the bucket is full,
    /// leaving it in debt, so that no message size is refused for ever.
    fn take(&mut self, rate: &PublishRate, size: usize) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        if let Some(per_second) = rate.messages {
            self.messages = (self.messages + elapsed * per_second).min(per_second);
        }
        if let Some(per_second) = rate.bytes {
            self.bytes = (self.bytes + elapsed * per_second).min(per_second);
        }
        let messages_ok = rate.messages.is_none_or(|_| self.messages >= 1.0);
        let bytes_ok = rate
            .bytes
            .is_none_or(|per_second| self.bytes >= size as f64 || self.bytes >= per_second);
        if !(messages_ok && bytes_ok) {
            return false;
        }
        if rate.messages.is_some() {
            self.messages -= 1.0;
        }
        if rate.bytes.is_some() {
            self.bytes -= size as f64;
        }
        true
    }
}

fn lock(m: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The buckets of one server.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    rate: OnceLock<PublishRate>,
    clients: papaya::HashMap<ClientId, Mutex<Bucket>, foldhash::fast::RandomState>,
    anonymous: OnceLock<Mutex<Bucket>>,
}

impl Limiter {
    /// Sets the limits (once, when the server is built).
    pub(crate) fn configure(&self, rate: PublishRate) {
        let _ = self.rate.set(rate);
    }

    fn rate(&self) -> Option<&PublishRate> {
        self.rate.get().filter(|r| !r.is_unlimited())
    }

    /// Gives a client just handshaken its bucket.
    pub(crate) fn start(&self, client: ClientId) {
        if let Some(rate) = self.rate() {
            self.clients.pin().insert(client, Mutex::new(Bucket::full(rate)));
        }
    }

    /// Drops the bucket of a client whose session ended.
    pub(crate) fn end(&self, client: &ClientId) {
        self.clients.pin().remove(client);
    }

    /// Whether a publish of `size` bytes by `client` (as the message names it) is
    /// within the limits; takes its share if so.
    pub(crate) fn allow(&self, client: Option<&str>, size: usize) -> bool {
        let Some(rate) = self.rate() else { return true };
        let clients = self.clients.pin();
        match client.and_then(ClientId::parse).and_then(|id| clients.get(&id)) {
            Some(bucket) => lock(bucket).take(rate, size),
            None => {
                let anonymous = self.anonymous.get_or_init(|| Mutex::new(Bucket::full(rate)));
                lock(anonymous).take(rate, size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_holds_a_second_and_refills() {
        let rate = PublishRate { messages: Some(5.0), bytes: None };
        let mut bucket = Bucket::full(&rate);
        let allowed = (0..10).filter(|_| bucket.take(&rate, 10)).count();
        assert_eq!(allowed, 5);
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!((0..10).filter(|_| bucket.take(&rate, 10)).count(), 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..10).filter(|_| bucket.take(&rate, 10)).count(), 5, "one second's worth");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_limited_but_no_message_is_too_big_for_ever() {
        let rate = PublishRate { messages: None, bytes: Some(1000.0) };
        let mut bucket = Bucket::full(&rate);
        assert!(bucket.take(&rate, 600));
        assert!(!bucket.take(&rate, 600), "400 bytes left");
        assert!(bucket.take(&rate, 400));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(bucket.take(&rate, 5000), "a full bucket lets a big one through");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!bucket.take(&rate, 1), "still paying for it");
    }
}
