//! The Redis engine on a Redis Cluster of three masters: the conformance suite,
//! and two nodes delivering to each other. Each test starts its own cluster on
//! free ports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestEngine, ch, start, take_numbers};
use faye_engine::{EncodedMessage, Engine};
use faye_redis::{RedisConfig, RedisEngine};
use faye_testkit::redis::RedisCluster;

fn config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig::cluster(cluster.urls()).namespace("test")
}

faye_engine::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    {
        let cluster = Arc::new(RedisCluster::start());
        let config = config(&cluster);
        TestEngine::connect(cluster, config).await
    }
);

fn msg(n: usize) -> EncodedMessage {
    EncodedMessage::from_json(format!(r#"{{"channel":"/chat/room","data":{n}}}"#).as_bytes())
}

/// Which node owns `key`'s slot: the one that answers `EXISTS` without `MOVED`.
fn owner(cluster: &RedisCluster, key: &str) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| !n.command(&["EXISTS", key])[0].starts_with("-MOVED"))
        .expect("a node owns every slot")
}

/// Two nodes on the Cluster: a client made on one, subscribed and taken over on
/// the other, receives what either publishes; with the scripts flushed from
/// every master, the engine loads them again where they are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_to_each_other_across_shards() {
    let cluster = RedisCluster::start();
    let a = RedisEngine::connect(config(&cluster)).await.unwrap();
    let b = RedisEngine::connect(config(&cluster)).await.unwrap();
    let timeout = Duration::from_secs(30);
    let (_rec_a, _rec_b) = (start(&a, timeout), start(&b, timeout));

    // Clients until one's keys live on another shard than the bus: its
    // pipelines (create, ping, takeover, destroy) then span two nodes.
    let bus = owner(&cluster, "test:bus");
    let id = loop {
        let id = a.create_client().await.unwrap();
        if owner(&cluster, &format!("test:client:{{{}}}", id.as_str())) != bus {
            break id;
        }
    };
    assert!(b.client_exists(&id).await.unwrap(), "sessions are seen on every node");
    b.subscribe(&id, &ch("/chat/*")).await.unwrap();
    a.ping(&id).await.unwrap();

    a.publish(&ch("/chat/room"), msg(1)).await.unwrap();
    assert_eq!(take_numbers(&a, &id, 1).await, [1], "held on A, where it was made");
    // The client's next connect lands on B: B takes it over.
    a.publish(&ch("/chat/room"), msg(2)).await.unwrap();
    b.publish(&ch("/chat/room"), msg(3)).await.unwrap();
    assert_eq!(take_numbers(&b, &id, 2).await, [2, 3]);

    // A publish on A reaches the subscriber now held on B.
    a.publish(&ch("/chat/room"), msg(4)).await.unwrap();
    assert_eq!(take_numbers(&b, &id, 1).await, [4]);

    // Every master loses the scripts: the next takeover (a pipeline invoking a
    // script) and subscription (a script alone) load them again.
    for node in &cluster.nodes {
        assert_eq!(node.command(&["SCRIPT", "FLUSH"]), ["+OK"]);
    }
    a.publish(&ch("/chat/room"), msg(5)).await.unwrap();
    assert_eq!(take_numbers(&a, &id, 1).await, [5], "taken back over by A");
    let other = b.create_client().await.unwrap();
    b.subscribe(&other, &ch("/chat/room")).await.unwrap();
    a.publish(&ch("/chat/room"), msg(6)).await.unwrap();
    assert_eq!(take_numbers(&b, &other, 1).await, [6]);
    assert_eq!(take_numbers(&a, &id, 1).await, [6]);

    a.destroy_client(&id).await.unwrap();
    assert!(!b.client_exists(&id).await.unwrap());
    a.shutdown().await;
    b.shutdown().await;
}
