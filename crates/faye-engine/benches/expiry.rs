//! Session expiry bookkeeping for 100,000 clients in the memory engine: create
//! them, ping them all once (as each `/meta/connect` does), then let them all
//! expire and be destroyed. Time is tokio's paused clock, so what is measured
//! is the engine's own work (timers, wakeups, destruction), not the waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use faye_engine::{
    ClientId, Engine, EngineContext, EngineEvent, EngineListener, Limits, MemoryEngine,
};

const SESSIONS: usize = 100_000;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Closed(AtomicUsize);
impl EngineListener for Closed {
    fn mail(&self, _: &ClientId) {}
    fn event(&self, event: EngineEvent) {
        if matches!(event, EngineEvent::Close(_)) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One run: returns (create, ping, expire) wall times.
async fn run() -> (Duration, Duration, Duration) {
    let engine = MemoryEngine::new();
    let closed = Arc::new(Closed::default());
    engine.start(EngineContext {
        listener: closed.clone(),
        timeout: TIMEOUT,
        limits: Limits::default(),
    });
    let t = Instant::now();
    let mut ids = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        ids.push(engine.create_client().await.unwrap());
    }
    let create = t.elapsed();
    tokio::time::advance(TIMEOUT).await;
    let t = Instant::now();
    for id in &ids {
        engine.ping(id).await.unwrap();
    }
    let ping = t.elapsed();
    let t = Instant::now();
    // Past the pinged clients' expiry (2 × the timeout after the ping).
    tokio::time::advance(TIMEOUT * 2 + Duration::from_secs(2)).await;
    while closed.0.load(Ordering::Relaxed) < SESSIONS {
        tokio::task::yield_now().await;
    }
    let expire = t.elapsed();
    engine.shutdown().await;
    (create, ping, expire)
}

fn expiry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("expiry_100k_sessions");
    g.sample_size(10);
    for (name, part) in [("create", 0), ("ping", 1), ("expire", 2)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let times = rt.block_on(run());
                    total += [times.0, times.1, times.2][part];
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, expiry);
criterion_main!(benches);
