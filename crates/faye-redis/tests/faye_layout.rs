//! The engine conformance suite on the faye-redis layout ([`FayeRedisEngine`]),
//! each check on its own redis-server, in real time. The byte limit on a
//! client's queue is not enforced in this layout (a Node server's queue writes
//! would not count), so its check is left out.

mod common;

use common::FayeLayout;

faye_engine::conformance_tests!(@each
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    FayeLayout::fresh_layout().await;
    creates_unique_base36_clients,
    expires_two_timeouts_after_the_last_ping,
    destroy_unsubscribes_and_reports_disconnect_then_close,
    subscription_events_fire_only_on_change,
    publish_routes_by_name_and_wildcards,
    delivers_once_per_client_per_publish,
    unsubscribed_clients_receive_nothing,
    refuses_subscriptions_past_the_limit,
    destroys_a_client_whose_queue_overflows,
    a_connect_asking_again_gets_its_answer_again,
);

mod layout {
    use std::time::Duration;

    use faye_engine::testing::Recorder;
    use faye_engine::{ClientId, Engine, EngineEvent};
    use faye_protocol::EncodedMessage;
    use faye_redis::{Error, FayeRedisEngine, RedisConfig};
    use faye_testkit::redis::RedisServer;

    use super::common::{FayeLayout, ch, numbers, poll, start};

    fn msg(channel: &str, n: usize) -> EncodedMessage {
        EncodedMessage::from_json(format!(r#"{{"channel":"{channel}","data":{n}}}"#).as_bytes())
    }

    async fn redis(server: &RedisServer) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(server.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not within 5 s: {what}");
    }

    /// The keys are faye-redis's, byte for byte: what a Node Faye server reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_faye_redis_keys() {
        let node = FayeLayout::fresh_layout().await;
        let _rec = start(&node, Duration::from_secs(10));
        let mut r = redis(&node.server).await;
        let id = node.create_client().await.unwrap();
        node.subscribe(&id, &ch("/chat/*")).await.unwrap();
        node.publish(&ch("/chat/room"), msg("/chat/room", 1)).await.unwrap();

        let score: f64 = redis::cmd("ZSCORE")
            .arg("/clients")
            .arg(id.as_str())
            .query_async(&mut r)
            .await
            .unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        assert!(
            (now.as_millis() as f64 - score).abs() < 5_000.0,
            "score {score}: a ping time in ms"
        );
        let own: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("/clients/{id}/channels"))
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(own, ["/chat/*"]);
        let subscribers: Vec<String> =
            redis::cmd("SMEMBERS").arg("/channels/chat/*").query_async(&mut r).await.unwrap();
        assert_eq!(subscribers, [id.as_str()]);
        let queued: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("/clients/{id}/messages"))
            .arg(0)
            .arg(-1)
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(queued, [r#"{"channel":"/chat/room","data":1}"#]);
        node.shutdown().await;
    }

    /// A Node server queues the publish as its publisher sent it, `clientId`
    /// included, and notifies: the client is woken here and gets the message
    /// without the publisher's credential, other fields intact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_what_a_node_server_queued() {
        let node = FayeLayout::fresh_layout().await;
        let rec = start(&node, Duration::from_secs(10));
        let mut r = redis(&node.server).await;
        let id = node.create_client().await.unwrap();
        let queued = r#"{"channel":"/a","data":{"x":1},"clientId":"publisherssecret","id":"7","ext":{"k":true}}"#;
        let _: () = redis::pipe()
            .cmd("RPUSH")
            .arg(format!("/clients/{id}/messages"))
            .arg(queued)
            .cmd("PUBLISH")
            .arg("/notifications/messages")
            .arg(id.as_str())
            .query_async(&mut r)
            .await
            .unwrap();
        eventually("the notification wakes the client", || rec.mail().contains(&id)).await;
        let taken = node.take_queue(&id, Some(&poll())).await.unwrap();
        let got: Vec<serde_json::Value> =
            taken.iter().map(|m| serde_json::from_slice(m.json()).unwrap()).collect();
        assert_eq!(
            got,
            [serde_json::json!({"channel": "/a", "data": {"x": 1}, "id": "7", "ext": {"k": true}})]
        );
        node.shutdown().await;
    }

    /// A notification sent once `connect` has returned reaches the node, even
    /// before the server starts it: the subscription is made in `connect`, not
    /// later by a task that a notification could outrun.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hears_a_notification_sent_before_it_started() {
        let node = FayeLayout::fresh_layout().await;
        let mut r = redis(&node.server).await;
        let id = faye_engine::ClientId::from_random_bytes([9; 20]);
        let _: () = redis::cmd("PUBLISH")
            .arg("/notifications/messages")
            .arg(id.as_str())
            .query_async(&mut r)
            .await
            .unwrap();
        let rec = start(&node, Duration::from_secs(10));
        eventually("the notification sent before start is heard", || rec.mail().contains(&id))
            .await;
        node.shutdown().await;
    }

    /// Two nodes collect: an expired client is destroyed and reported once, its
    /// keys are gone, and the lock is released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_client_is_collected_once() {
        let a = FayeLayout::fresh_layout().await;
        let b = FayeLayout::layout_on(a.server.clone()).await;
        let timeout = Duration::from_millis(200);
        let (rec_a, rec_b) = (start(&a, timeout), start(&b, timeout));
        let mut r = redis(&a.server).await;
        let id = a.create_client().await.unwrap();
        a.subscribe(&id, &ch("/x")).await.unwrap();
        let disconnects = |rec: &Recorder| {
            rec.events().iter().filter(|e| **e == EngineEvent::Disconnect(id)).count()
        };
        eventually("collected", || disconnects(&rec_a) + disconnects(&rec_b) > 0).await;
        // Both nodes keep collecting for a while: still reported once.
        tokio::time::sleep(timeout * 4).await;
        assert_eq!(disconnects(&rec_a) + disconnects(&rec_b), 1);
        for rec in [&rec_a, &rec_b] {
            eventually("every node reports Close", || {
                rec.events().contains(&EngineEvent::Close(id))
            })
            .await;
        }
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut r).await.unwrap();
        assert!(keys.iter().all(|k| !k.contains(id.as_str()) && k != "/channels/x"), "{keys:?}");
        let lock: Option<String> =
            redis::cmd("GET").arg("/locks/gc").query_async(&mut r).await.unwrap();
        assert_eq!(lock, None, "the collector let go of the lock");
        a.shutdown().await;
        b.shutdown().await;
    }

    /// A lock a Node server holds keeps this node's collector out; one past
    /// its expiry is taken over, as faye-redis does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn honours_faye_redis_gc_lock() {
        let node = FayeLayout::fresh_layout().await;
        let mut r = redis(&node.server).await;
        let held_until =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                + 60_000;
        let _: () = redis::cmd("SET")
            .arg("/locks/gc")
            .arg(held_until.to_string())
            .query_async(&mut r)
            .await
            .unwrap();
        let timeout = Duration::from_millis(200);
        let rec = start(&node, timeout);
        let id = node.create_client().await.unwrap();
        tokio::time::sleep(timeout * 4).await;
        assert!(
            !rec.events().contains(&EngineEvent::Disconnect(id)),
            "collected under another's lock"
        );
        assert!(!node.client_exists(&id).await.unwrap(), "expired all the same (1.6 × timeout)");
        // A stale lock (its expiry passed) is taken over.
        let _: () = redis::cmd("SET").arg("/locks/gc").arg("1").query_async(&mut r).await.unwrap();
        eventually("collected", || rec.events().contains(&EngineEvent::Disconnect(id))).await;
        node.shutdown().await;
    }

    /// A fan-out larger than a chunk is delivered over several short scripts,
    /// and a publish made right behind it still reaches everyone after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_fan_out_goes_in_chunks_and_in_order() {
        const SUBSCRIBERS: usize = 2500;
        let node = FayeLayout::fresh_layout().await;
        let _rec = start(&node, Duration::from_secs(30));
        let mut ids: Vec<ClientId> = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let id = node.create_client().await.unwrap();
            node.subscribe(&id, &ch("/big")).await.unwrap();
            ids.push(id);
        }
        node.server.command(&["CONFIG", "RESETSTAT"]);
        let big = ch("/big");
        let (first, second) =
            tokio::join!(node.publish(&big, msg("/big", 1)), node.publish(&big, msg("/big", 2)));
        first.unwrap();
        second.unwrap();
        let calls = node.server.command_calls();
        let scripts: u64 = calls.iter().filter(|(c, _)| c == "evalsha").map(|(_, n)| n).sum();
        // Three scripts of at most 1,000 recipients per publish, and one more if
        // the second was sent in the first's pipeline (it is deferred, then sent
        // again once the first is done).
        assert!((6..=7).contains(&scripts), "{calls:?}");
        for id in &ids {
            assert_eq!(numbers(node.take_queue(id, None).await.unwrap()), [1, 2]);
        }
        node.shutdown().await;
    }

    /// The notification subscription is dropped by Redis (as a restart or a
    /// `CLIENT KILL` does): the node subscribes again, wakes every client it
    /// holds (what was notified meanwhile is lost), and hears notifications again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resubscribes_to_notifications_and_wakes_its_clients() {
        let node = FayeLayout::fresh_layout().await;
        let rec = start(&node, Duration::from_secs(10));
        let mut r = redis(&node.server).await;
        let id = node.create_client().await.unwrap();
        node.subscribe(&id, &ch("/n")).await.unwrap();
        assert!(node.take_queue(&id, None).await.unwrap().is_empty()); // held here
        node.publish(&ch("/n"), msg("/n", 1)).await.unwrap();
        let mail =
            |rec: &faye_engine::testing::Recorder| rec.mail().iter().filter(|m| **m == id).count();
        eventually("the first notification", || mail(&rec) == 1).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(killed, 1, "the node's notification connection");
        eventually("woken after resubscribing", || mail(&rec) >= 2).await;
        let woken = mail(&rec);
        node.publish(&ch("/n"), msg("/n", 2)).await.unwrap();
        eventually("notifications flow again", || mail(&rec) > woken).await;
        assert_eq!(numbers(node.take_queue(&id, None).await.unwrap()), [1, 2]);
        node.shutdown().await;
    }

    /// What this layout cannot run on is refused at start, saying why.
    #[tokio::test]
    async fn refuses_cluster_and_sentinel() {
        for config in [
            RedisConfig::cluster(["redis://127.0.0.1:1"]),
            RedisConfig::new("redis+sentinel://127.0.0.1:1/mymaster"),
        ] {
            match FayeRedisEngine::connect(config).await {
                Err(e @ Error::Unsupported(_)) => {
                    assert!(e.to_string().starts_with("the faye-redis layout cannot run on"), "{e}")
                }
                other => panic!("accepted: {other:?}"),
            }
        }
    }
}
