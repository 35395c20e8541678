//! Accounting for what arrived: per-subscriber loss, duplicate and ordering checks,
//! and latency percentiles from HdrHistogram.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::wire::Marker;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with three
/// significant digits.
const HIST_MAX_US: u64 = 600_000_000;

/// A new, empty latency histogram (µs).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// A histogram in HdrHistogram's V2 format, base64: how a worker process sends
/// its latencies to the parent.
pub(crate) fn encode_histogram(h: &Histogram<u64>) -> anyhow::Result<String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot serialise a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The histogram [`encode_histogram`] wrote.
pub(crate) fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    use anyhow::Context as _;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("a histogram that is not base64")?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("cannot read a histogram: {e:?}"))
}

/// A set of message ids, one bit each.
#[derive(Debug, Default, Clone)]
pub(crate) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Adds `i`; true if it was not there yet.
    pub(crate) fn insert(&mut self, i: u64) -> bool {
        let word = (i / 64) as usize;
        let bit = 1u64 << (i % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }
}

/// What one subscriber (or, merged, a group of them) counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// Distinct messages received.
    pub(crate) unique: u64,
    /// Messages received again.
    pub(crate) duplicated: u64,
    /// Messages received after a later message from the same publisher.
    pub(crate) out_of_order: u64,
    /// Messages for a room this subscriber is not in (or with a bad publisher index).
    pub(crate) misrouted: u64,
    /// Deliveries whose benchmark marker could not be parsed.
    pub(crate) malformed: u64,
    /// When the last message arrived (ns since the process epoch); 0 if none did.
    pub(crate) last_recv_ns: u64,
}

impl Tally {
    /// Adds another subscriber's counts.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.misrouted += other.misrouted;
        self.malformed += other.malformed;
        self.last_recv_ns = self.last_recv_ns.max(other.last_recv_ns);
    }
}

/// One subscriber's receive-side state.
#[derive(Debug)]
pub(crate) struct Receiver {
    seen: BitSet,
    /// Per publisher: 1 + the highest id received from it, 0 if none.
    last_by_publisher: Vec<u64>,
    rooms: Vec<u32>,
    pub(crate) tally: Tally,
    /// Latencies (µs) not yet moved into a shared histogram.
    pub(crate) pending_us: Vec<u64>,
}

impl Receiver {
    /// A subscriber in `rooms`, receiving from `publishers` publishers.
    pub(crate) fn new(publishers: usize, rooms: Vec<u32>) -> Self {
        Self {
            seen: BitSet::default(),
            last_by_publisher: vec![0; publishers],
            rooms,
            tally: Tally::default(),
            pending_us: Vec::new(),
        }
    }

    /// Counts one delivery that arrived at `now_ns`.
    pub(crate) fn on_delivery(&mut self, d: Marker, now_ns: u64) {
        let Some(last) = self.last_by_publisher.get_mut(d.publisher as usize) else {
            self.tally.misrouted += 1;
            return;
        };
        if !self.rooms.contains(&d.room) {
            self.tally.misrouted += 1;
            return;
        }
        if !self.seen.insert(d.id) {
            self.tally.duplicated += 1;
            return;
        }
        self.tally.unique += 1;
        self.tally.last_recv_ns = self.tally.last_recv_ns.max(now_ns);
        if d.id + 1 < *last {
            self.tally.out_of_order += 1;
        } else {
            *last = d.id + 1;
        }
        self.pending_us.push(now_ns.saturating_sub(d.t_ns) / 1000);
    }
}

/// Latency histograms shared by all subscriber tasks, in shards to keep lock
/// contention low.
#[derive(Debug)]
pub(crate) struct SharedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl SharedHistogram {
    pub(crate) fn new(shards: usize) -> Self {
        Self { shards: (0..shards.max(1)).map(|_| Mutex::new(new_histogram())).collect() }
    }

    /// Moves `values` (µs) into shard `shard`.
    pub(crate) fn record(&self, shard: usize, values: &mut Vec<u64>) {
        if values.is_empty() {
            return;
        }
        let mut h = self.shards[shard % self.shards.len()].lock().expect("histogram lock");
        for &v in values.iter() {
            h.saturating_record(v.clamp(1, HIST_MAX_US));
        }
        values.clear();
    }

    /// All shards merged.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            all.add(&*s.lock().expect("histogram lock")).expect("same bounds");
        }
        all
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// The distribution as (percentile, ms) points, for plotting.
    pub distribution: Vec<(f64, f64)>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |p: f64| ms(h.value_at_quantile(p));
        // Points spaced evenly on the 1/(1-p) log scale up to 99.999%, as
        // HdrHistogram's percentile plots are, stopping where samples run out.
        let mut distribution = Vec::new();
        for k in 0..=100 {
            let p = 1.0 - 10f64.powf(-(k as f64) / 20.0);
            if k > 0 && (1.0 - p) * (h.len() as f64) < 1.0 {
                break;
            }
            distribution.push((p * 100.0, q(p)));
        }
        distribution.push((100.0, ms(h.max())));
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(h.max()),
            distribution,
        }
    }
}

/// Delivery counts for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Deliveries the published messages should have produced.
    pub expected: u64,
    /// Distinct deliveries that arrived.
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message from the same publisher.
    pub out_of_order: u64,
    /// Deliveries to a subscriber not in the message's channel.
    pub misrouted: u64,
    /// Deliveries whose benchmark marker could not be parsed.
    pub malformed: u64,
}

impl Counts {
    /// Counts from the expected total and every subscriber's tally.
    pub(crate) fn from_tallies<'a>(
        expected: u64,
        tallies: impl IntoIterator<Item = &'a Tally>,
    ) -> Self {
        let mut all = Tally::default();
        for t in tallies {
            all.merge(t);
        }
        Self {
            expected,
            delivered: all.unique,
            lost: expected.saturating_sub(all.unique),
            duplicated: all.duplicated,
            out_of_order: all.out_of_order,
            misrouted: all.misrouted,
            malformed: all.malformed,
        }
    }

    /// Fraction of expected deliveries lost.
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { self.lost as f64 / self.expected as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, publisher: u32, room: u32, t_ns: u64) -> Marker {
        Marker { id, publisher, room, t_ns }
    }

    #[test]
    fn bitset_reports_fresh_and_repeated_ids() {
        let mut b = BitSet::default();
        assert!(b.insert(0));
        assert!(b.insert(1000));
        assert!(!b.insert(1000));
        assert!(b.insert(63));
        assert!(b.insert(64));
        assert!(!b.insert(0));
    }

    #[test]
    fn receiver_counts_duplicates_reordering_and_misrouting() {
        let mut r = Receiver::new(2, vec![3, 7]);
        r.on_delivery(d(0, 0, 3, 0), 1_000_000);
        r.on_delivery(d(2, 0, 7, 0), 2_000_000);
        r.on_delivery(d(1, 0, 3, 0), 3_000_000); // after 2 from publisher 0
        r.on_delivery(d(2, 0, 7, 0), 4_000_000); // again
        r.on_delivery(d(5, 1, 3, 0), 5_000_000); // publisher 1 is independent
        r.on_delivery(d(4, 1, 3, 0), 5_000_000); // out of order within publisher 1
        r.on_delivery(d(6, 1, 9, 0), 5_000_000); // not my room
        r.on_delivery(d(8, 5, 3, 0), 5_000_000); // no such publisher
        assert_eq!(
            r.tally,
            Tally {
                unique: 5,
                duplicated: 1,
                out_of_order: 2,
                misrouted: 2,
                malformed: 0,
                last_recv_ns: 5_000_000
            }
        );
        assert_eq!(r.pending_us, vec![1000, 2000, 3000, 5000, 5000]);
    }

    #[test]
    fn counts_add_up_over_subscribers() {
        let a = Tally {
            unique: 10,
            duplicated: 1,
            out_of_order: 2,
            last_recv_ns: 5,
            ..Tally::default()
        };
        let b = Tally { unique: 7, misrouted: 3, last_recv_ns: 9, ..Tally::default() };
        let c = Counts::from_tallies(20, [&a, &b]);
        assert_eq!(c.delivered, 17);
        assert_eq!(c.lost, 3);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.out_of_order, 2);
        assert_eq!(c.misrouted, 3);
        assert!((c.loss_ratio() - 0.15).abs() < 1e-12);
        // More unique deliveries than expected never makes loss negative.
        assert_eq!(Counts::from_tallies(5, [&a]).lost, 0);
        assert_eq!(Counts::from_tallies(0, []).loss_ratio(), 0.0);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let shared = SharedHistogram::new(4);
        // 1 ms .. 1000 ms, one sample each, spread over shards.
        for i in 1..=1000u64 {
            shared.record(i as usize, &mut vec![i * 1000]);
        }
        let l = Latency::from_histogram(&shared.merged());
        assert_eq!(l.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(l.p50_ms, 500.0), "{}", l.p50_ms);
        assert!(close(l.p90_ms, 900.0), "{}", l.p90_ms);
        assert!(close(l.p99_ms, 990.0), "{}", l.p99_ms);
        assert!(close(l.p999_ms, 999.0), "{}", l.p999_ms);
        assert!(close(l.max_ms, 1000.0), "{}", l.max_ms);
        assert!(close(l.mean_ms, 500.5), "{}", l.mean_ms);
        // The plot's points rise monotonically and end at the maximum.
        assert!(l.distribution.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(l.distribution.last().map(|p| p.0), Some(100.0));
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut h = new_histogram();
        for v in [1, 7, 1000, 1000, 250_000, HIST_MAX_US] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(Latency::from_histogram(&back), Latency::from_histogram(&h));
        // Merged into the parent's, with the same bounds.
        let mut all = new_histogram();
        all.add(&back).unwrap();
        assert_eq!(all.max(), h.max());
        assert!(decode_histogram("not base64!").is_err());
        assert!(decode_histogram("AAAA").is_err());
    }

    #[test]
    fn empty_histogram_gives_zeroes() {
        let l = Latency::from_histogram(&new_histogram());
        assert_eq!(l, Latency::default());
    }

    #[test]
    fn pending_latencies_are_moved_into_the_histogram() {
        let shared = SharedHistogram::new(2);
        let mut v = vec![10, 20, 0];
        shared.record(1, &mut v);
        assert!(v.is_empty());
        assert_eq!(shared.merged().len(), 3);
    }
}
