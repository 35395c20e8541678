//! Per-client order: one client's messages are applied in the order it sent them.
//!
//! Faye's HTTP transports send a burst of messages as several POSTs at once, each
//! on its own connection, and a multi-threaded server reads those connections in
//! parallel, so requests sent in one order can be handled in another. What does
//! say the order is the message `id`: Faye's client numbers every message it sends
//! from one counter (base 36: `1`…`9`, `a`…`z`, `10`…), CometD's the same way in
//! base 10. So each client's messages are applied in id order: a message whose
//! predecessor has not been applied yet waits for it, then goes ahead anyway once
//! the client's messages have made no progress for
//! [`ServerOptions::order_wait`](crate::ServerOptions::order_wait) (a predecessor
//! may never come: a client extension dropped it, or it was sent to another
//! server).
//!
//! "Applied" is when a message has had its effect, or its effect has its place: a
//! publish is in the engine or in its line (`Engine::publish`), a subscription
//! exists. A `/meta/connect` never waits and counts as applied once it
//! has started, so a held connect never holds up the messages after it. Messages
//! without a numeric id, and clients this server did not handshake, are not
//! ordered.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faye_engine::ClientId;
use faye_protocol::Message;
use serde_json::Value;
use tokio::sync::Notify;

/// Ids longer than this are not a counter (and would overflow a u64 in base 36).
const MAX_ID_LEN: usize = 12;
/// How many ids applied ahead of a gap are remembered per client. Past it, the
/// oldest gap is given up on: its messages count as late.
const MAX_AHEAD: usize = 64;

/// The order state of every client handshaken on this server.
#[derive(Default)]
pub(crate) struct Sequencer {
    clients: papaya::HashMap<ClientId, Arc<ClientOrder>, foldhash::fast::RandomState>,
}

#[derive(Default)]
struct ClientOrder {
    state: Mutex<OrderState>,
    /// Signalled whenever `last` moves.
    advanced: Notify,
}

#[derive(Default)]
struct OrderState {
    /// The last id applied with every id before it applied (or given up on).
    last: Option<u64>,
    /// Ids applied while an earlier one was still missing.
    ahead: Vec<u64>,
    /// An id of this client had a letter in it: it counts in base 36 (Faye), so
    /// `9` → `10` is a gap, not CometD's next decimal.
    letters: bool,
}

/// Where an id stands against the last one applied.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// The next one, or the first one seen, or before the last: apply now.
    Now,
    /// After a gap: wait for the gap to fill.
    AfterGap,
}

impl OrderState {
    fn place(&self, id: u64) -> Place {
        match self.last {
            Some(last) if id > last && !self.follows(last, id) => Place::AfterGap,
            _ => Place::Now,
        }
    }

    /// Whether `next` directly follows `last`: in base 36 (Faye), or in base 10
    /// (CometD) while no id of this client has had a letter in it.
    fn follows(&self, last: u64, next: u64) -> bool {
        next == last + 1 || (!self.letters && decimal_successor(last) == Some(next))
    }

    /// Records `id` as applied. `skip_gap`: it waited as long as it may, so the ids
    /// still missing before it are given up on.
    fn applied(&mut self, id: u64, skip_gap: bool) {
        let Some(last) = self.last else {
            self.last = Some(id);
            return;
        };
        if id <= last {
            return;
        }
        if skip_gap || self.follows(last, id) {
            self.last = Some(id);
        } else {
            self.ahead.push(id);
            if self.ahead.len() <= MAX_AHEAD {
                return;
            }
            // Too many gaps: the oldest is not going to fill.
            self.last = self.ahead.iter().copied().min();
        }
        // Ids applied ahead of a gap that just closed now follow on.
        while let Some(last) = self.last {
            self.ahead.retain(|&a| a > last);
            match self.ahead.iter().position(|&a| self.follows(last, a)) {
                Some(i) => self.last = Some(self.ahead.swap_remove(i)),
                None => break,
            }
        }
    }
}

/// The base-36 reading of the decimal successor of `last` read back as decimal,
/// if `last` is all decimal digits.
fn decimal_successor(last: u64) -> Option<u64> {
    let decimal = to_base36(last);
    if !decimal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let next: u64 = decimal.parse::<u64>().ok()?.checked_add(1)?;
    u64::from_str_radix(&next.to_string(), 36).ok()
}

fn to_base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// A message's id as a counter value read in base 36, and whether it has a letter
/// in it; `None` if it is not a counter.
fn counter(id: &Value) -> Option<(u64, bool)> {
    let text = match id {
        Value::String(s) => s.as_str(),
        Value::Number(n) => return n.as_u64().map(|n| (n, false)),
        _ => return None,
    };
    if text.is_empty() || text.len() > MAX_ID_LEN {
        return None;
    }
    let value = u64::from_str_radix(text, 36).ok()?;
    Some((value, text.bytes().any(|b| b.is_ascii_alphabetic())))
}

fn lock(m: &Mutex<OrderState>) -> MutexGuard<'_, OrderState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message's turn: dropping it records the message as applied.
pub(crate) struct Turn {
    order: Arc<ClientOrder>,
    id: u64,
    waited_out: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        lock(&self.order.state).applied(self.id, self.waited_out);
        self.order.advanced.notify_waiters();
    }
}

impl Sequencer {
    /// Starts ordering a client just handshaken; `id` is its handshake's id.
    pub(crate) fn start(&self, client: ClientId, handshake: Option<&Value>) {
        let order = ClientOrder::default();
        {
            let mut state = lock(&order.state);
            let id = handshake.and_then(counter);
            state.last = id.map(|(value, _)| value);
            state.letters = id.is_some_and(|(_, letters)| letters);
        }
        self.clients.pin().insert(client, Arc::new(order));
    }

    /// Forgets a client whose session ended.
    pub(crate) fn end(&self, client: &ClientId) {
        self.clients.pin().remove(client);
    }

    /// Waits until `msg` may be applied: its predecessor has been, or `wait` has
    /// passed (at once for a zero `wait`: the message is applied ahead of any gap,
    /// which stays open for the messages still missing). `None` for a message that
    /// is not ordered.
    pub(crate) async fn turn(&self, msg: &Message, wait: Duration) -> Option<Turn> {
        let (id, letters) = msg.id.as_ref().and_then(counter)?;
        let client = msg.client_id.as_deref().and_then(ClientId::parse)?;
        let order = self.clients.pin().get(&client)?.clone();
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut seen = None;
        loop {
            let advanced = order.advanced.notified();
            {
                let mut state = lock(&order.state);
                state.letters |= letters;
                if wait.is_zero() || state.place(id) == Place::Now {
                    return Some(Turn { order: order.clone(), id, waited_out: false });
                }
                // The wait counts from the client's last progress, not from this
                // message's arrival: behind a long burst being applied one by one
                // (each publish a round trip to a remote engine) the predecessor is
                // coming, and only a gap that stops filling is given up on.
                if seen.is_some_and(|last| last != state.last) {
                    deadline = tokio::time::Instant::now() + wait;
                }
                seen = Some(state.last);
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return Some(Turn { order, id, waited_out: true });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> u64 {
        counter(&Value::String(s.into())).unwrap().0
    }

    fn state(last: &str, letters: bool) -> OrderState {
        OrderState { last: Some(id(last)), ahead: Vec::new(), letters }
    }

    #[test]
    fn successors_in_base_36_and_until_a_letter_is_seen_base_10() {
        for (last, next) in [("1", "2"), ("9", "a"), ("z", "10"), ("19", "1a")] {
            assert!(state(last, true).follows(id(last), id(next)), "{last} -> {next}");
        }
        for (last, next) in [("9", "10"), ("19", "20"), ("99", "100")] {
            assert!(state(last, false).follows(id(last), id(next)), "decimal {last} -> {next}");
            assert!(!state(last, true).follows(id(last), id(next)), "faye {last} -> {next}");
        }
        for (last, next) in [("1", "3"), ("9", "b"), ("a", "10"), ("2", "1")] {
            assert!(!state(last, false).follows(id(last), id(next)), "{last} -> {next}");
        }
    }

    #[test]
    fn a_gap_closes_and_what_was_ahead_follows_on() {
        let mut s = state("4", true);
        assert_eq!(s.place(id("5")), Place::Now);
        assert_eq!(s.place(id("7")), Place::AfterGap);
        // 7 went ahead without waiting (a connect): remembered, not yet last.
        s.applied(id("7"), false);
        assert_eq!(s.last, Some(id("4")));
        s.applied(id("5"), false);
        s.applied(id("6"), false);
        assert_eq!((s.last, s.ahead.len()), (Some(id("7")), 0));
        // Late and duplicate ids change nothing.
        s.applied(id("3"), false);
        assert_eq!(s.last, Some(id("7")));
    }

    #[test]
    fn a_message_that_waited_out_skips_the_gap() {
        let mut s = state("4", true);
        s.applied(id("9"), true);
        assert_eq!(s.last, Some(id("9")));
        assert_eq!(s.place(id("a")), Place::Now);
        assert_eq!(s.place(id("5")), Place::Now, "late: applied at once");
    }

    #[test]
    fn too_many_gaps_give_up_the_oldest() {
        let mut s = OrderState { last: Some(0), ..OrderState::default() };
        for n in 0..=MAX_AHEAD as u64 {
            s.applied(10 + 2 * n, false);
        }
        assert!(s.ahead.len() <= MAX_AHEAD);
        assert_eq!(s.last, Some(10));
    }

    #[test]
    fn only_counters_are_ordered() {
        assert_eq!(counter(&Value::String("1a".into())), Some((46, true)));
        assert_eq!(counter(&serde_json::json!("12")), Some((38, false)));
        assert_eq!(counter(&serde_json::json!(7)), Some((7, false)));
        for v in
            [serde_json::json!("a-b"), serde_json::json!(""), serde_json::json!("1234567890abc")]
        {
            assert_eq!(counter(&v), None, "{v}");
        }
    }
}
