//! The Redis engine behind Sentinel (`redis+sentinel://HOST:PORT/MASTER`): the
//! conformance suite, and a failover the engine follows by itself. Each test
//! starts its own redis-servers and sentinel on free ports.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestEngine, ch, start, take_numbers};
use faye_engine::{EncodedMessage, Engine};
use faye_redis::{RedisConfig, RedisEngine};
use faye_testkit::redis::{RedisServer, Sentinel};

const MASTER: &str = "faye-test";

/// A primary, optionally a replica of it, and one sentinel watching them.
#[derive(Debug)]
struct Watched {
    sentinel: Sentinel,
    primary: RedisServer,
    replica: Option<RedisServer>,
}

impl Watched {
    fn start(with_replica: bool) -> Self {
        let primary = RedisServer::start();
        let replica = with_replica.then(|| {
            let replica = RedisServer::start_replica_of(primary.port);
            replica.wait_replicating(Duration::from_secs(10));
            replica
        });
        let sentinel = Sentinel::start(MASTER, primary.port, usize::from(with_replica));
        Self { sentinel, primary, replica }
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::new(format!("redis+sentinel://{}/{MASTER}", self.sentinel.addr()))
            .namespace("test")
            .response_timeout(Duration::from_secs(2))
    }
}

faye_engine::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    {
        let watched = Arc::new(Watched::start(false));
        let config = watched.config();
        TestEngine::connect(watched, config).await
    }
);

fn msg(n: usize) -> EncodedMessage {
    EncodedMessage::from_json(format!(r#"{{"channel":"/news","data":{n}}}"#).as_bytes())
}

#[test]
fn the_sentinel_url_is_checked() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for bad in ["redis+sentinel://127.0.0.1:1", "redis+sentinel://127.0.0.1:x/m"] {
        let err = rt.block_on(RedisEngine::connect(RedisConfig::new(bad))).unwrap_err();
        assert!(err.to_string().contains("invalid Redis URL"), "{bad}: {err}");
    }
    // No sentinel there: the engine does not start.
    let config =
        RedisConfig::sentinel(["127.0.0.1:1"], MASTER).response_timeout(Duration::from_millis(500));
    assert!(rt.block_on(RedisEngine::connect(config)).is_err());
}

/// Two nodes behind Sentinel: a subscriber held on one, a publisher on the
/// other. The primary is killed (SIGKILL); the sentinel promotes the replica;
/// both nodes find the new primary by themselves, the session (replicated
/// before the crash) survives, and the subscriber receives what is published
/// after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_failover_to_the_promoted_replica() {
    let watched = Watched::start(true);
    let replica = watched.replica.as_ref().unwrap();
    let a = RedisEngine::connect(watched.config()).await.unwrap();
    let b = RedisEngine::connect(watched.config()).await.unwrap();
    let timeout = Duration::from_secs(30);
    let (_rec_a, _rec_b) = (start(&a, timeout), start(&b, timeout));

    let id = b.create_client().await.unwrap();
    b.subscribe(&id, &ch("/news")).await.unwrap();
    a.publish(&ch("/news"), msg(1)).await.unwrap();
    assert_eq!(take_numbers(&b, &id, 1).await, [1]);
    // Everything so far is on the replica before the crash.
    let acked = watched.primary.command(&["WAIT", "1", "5000"]);
    assert_eq!(acked, [":1"], "the replica acknowledged the writes");

    let crashed = Instant::now();
    watched.primary.kill();

    // Publishes fail until the sentinel has promoted the replica and the node
    // has found it; then they go through, without restarting anything.
    let mut n = 2;
    let mut failures = 0;
    loop {
        match a.publish(&ch("/news"), msg(n)).await {
            Ok(()) => break,
            Err(_) => failures += 1,
        }
        assert!(crashed.elapsed() < Duration::from_secs(30), "no failover within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        n += 1;
    }
    let failed_over = crashed.elapsed();
    assert!(failures > 0, "publishes cannot succeed while there is no primary");
    assert_eq!(watched.sentinel.master_port(MASTER), Some(replica.port));
    assert_eq!(replica.role(), "master");
    eprintln!("publishing again {failed_over:?} after the crash ({failures} failed publishes)");

    // The publish that went through reaches the subscriber on the other node,
    // whose reader found the new primary too; so do later ones, from both nodes.
    assert!(b.client_exists(&id).await.unwrap(), "the replicated session survived");
    // A publish refused while the primary was down may still have reached the
    // promoted replica (only its answer was lost): it comes first, in order.
    let mut got = take_numbers(&b, &id, 1).await;
    while got.last().is_some_and(|&last| last < n) {
        let more = take_numbers(&b, &id, 1).await;
        assert!(!more.is_empty(), "{n} never arrived; got {got:?}");
        got.extend(more);
    }
    assert_eq!(got.last(), Some(&n), "{got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]) && got[0] >= 2, "{got:?}");
    a.publish(&ch("/news"), msg(n + 1)).await.unwrap();
    b.publish(&ch("/news"), msg(n + 2)).await.unwrap();
    assert_eq!(take_numbers(&b, &id, 2).await, [n + 1, n + 2]);

    // A session made after the failover works across the nodes too.
    let other = a.create_client().await.unwrap();
    a.subscribe(&other, &ch("/news")).await.unwrap();
    b.publish(&ch("/news"), msg(n + 3)).await.unwrap();
    assert_eq!(take_numbers(&a, &other, 1).await, [n + 3]);
    a.shutdown().await;
    b.shutdown().await;
}
