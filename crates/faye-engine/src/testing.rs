//! The engine conformance suite: Faye's shared "faye engine" examples, written once
//! and run by every engine.
//!
//! Each check is an async function taking a factory for a fresh, un-started engine.
//! The suite starts it with a 300 ms timeout (Faye's own spec value), so clients
//! expire 600 ms after their last ping. Time goes through `tokio::time`: run the
//! memory engine under `#[tokio::test(start_paused = true)]` and the checks take
//! microseconds; a networked engine runs them in real time.
//!
//! [`conformance_tests!`](crate::conformance_tests) declares one test per check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::sleep;

use faye_protocol::{Channel, EncodedMessage};

use crate::{ClientId, Engine, EngineContext, EngineEvent, EngineListener, Limits, Subscribed};

/// The timeout the suite starts engines with.
pub const TIMEOUT: Duration = Duration::from_millis(300);

/// The limits the suite starts engines with.
pub const LIMITS: Limits = Limits { max_subscriptions: 8, max_queue: 4, max_queue_bytes: 200 };

/// A listener that records everything an engine reports.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<EngineEvent>>,
    mail: Mutex<Vec<ClientId>>,
}

impl Recorder {
    /// Events so far.
    pub fn events(&self) -> Vec<EngineEvent> {
        self.events.lock().unwrap().clone()
    }
    /// Clients told they have mail, in order.
    pub fn mail(&self) -> Vec<ClientId> {
        self.mail.lock().unwrap().clone()
    }
}

impl EngineListener for Recorder {
    fn mail(&self, client: &ClientId) {
        self.mail.lock().unwrap().push(*client);
    }
    fn event(&self, event: EngineEvent) {
        self.events.lock().unwrap().push(event);
    }
}

/// Starts `engine` with a [`Recorder`] and [`TIMEOUT`].
pub fn start<E: Engine>(engine: E) -> (E, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    engine.start(EngineContext { listener: rec.clone(), timeout: TIMEOUT, limits: LIMITS });
    (engine, rec)
}

async fn queue_of<E: Engine>(engine: &E, id: &ClientId) -> Vec<String> {
    taken(engine, id, None).await
}

async fn taken<E: Engine>(engine: &E, id: &ClientId, request: Option<&str>) -> Vec<String> {
    engine
        .take_queue(id, request)
        .await
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8(m.json().to_vec()).unwrap())
        .collect()
}

fn msg(channel: &str, data: &str) -> EncodedMessage {
    EncodedMessage::from_json(format!(r#"{{"channel":"{channel}","data":{data}}}"#).as_bytes())
}

/// A channel the suite knows to be valid.
fn ch(name: &str) -> Channel {
    Channel::parse(name).expect("a valid channel")
}

/// Ids are 31 base-36 characters, unique, and each creation reports `Handshake`.
pub async fn creates_unique_base36_clients<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let a = engine.create_client().await.unwrap();
    let b = engine.create_client().await.unwrap();
    assert_ne!(a, b);
    for id in [a, b] {
        assert_eq!(id.as_str().len(), 31);
        assert!(id.as_str().bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert!(engine.client_exists(&id).await.unwrap());
    }
    assert_eq!(rec.events(), [EngineEvent::Handshake(a), EngineEvent::Handshake(b)]);
    let unknown = ClientId::from_random_bytes([7; 20]);
    assert!(!engine.client_exists(&unknown).await.unwrap());
    engine.shutdown().await;
}

/// A client lives 2T after its last ping (Faye: timeout 0.3 s, gone after 700 ms; a
/// ping at 450 ms keeps it alive at 900 ms and it is gone at 1350 ms).
pub async fn expires_two_timeouts_after_the_last_ping<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let a = engine.create_client().await.unwrap();
    let b = engine.create_client().await.unwrap();
    sleep(Duration::from_millis(450)).await;
    engine.ping(&b).await.unwrap();
    sleep(Duration::from_millis(250)).await; // t = 700 ms
    assert!(!engine.client_exists(&a).await.unwrap(), "a expired at 600 ms");
    assert!(engine.client_exists(&b).await.unwrap(), "b was pinged at 450 ms");
    assert!(rec.events().contains(&EngineEvent::Disconnect(a)));
    sleep(Duration::from_millis(200)).await; // t = 900 ms
    assert!(engine.client_exists(&b).await.unwrap());
    sleep(Duration::from_millis(450)).await; // t = 1350 ms
    assert!(!engine.client_exists(&b).await.unwrap(), "b expired at 1050 ms");
    engine.shutdown().await;
}

/// Destroying unsubscribes (one event per channel), then reports `Disconnect` and
/// `Close`; the client gets nothing afterwards.
pub async fn destroy_unsubscribes_and_reports_disconnect_then_close<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    engine.subscribe(&id, &ch("/foo")).await.unwrap();
    engine.subscribe(&id, &ch("/bar/*")).await.unwrap();
    engine.publish(&ch("/foo"), msg("/foo", "1")).await.unwrap();
    engine.destroy_client(&id).await.unwrap();
    assert!(!engine.client_exists(&id).await.unwrap());
    let mut tail: Vec<EngineEvent> = rec.events().split_off(3);
    let unsubs: Vec<_> = tail.drain(..2).collect();
    assert!(unsubs.contains(&EngineEvent::Unsubscribe(id, "/foo".into())));
    assert!(unsubs.contains(&EngineEvent::Unsubscribe(id, "/bar/*".into())));
    assert_eq!(tail, [EngineEvent::Disconnect(id), EngineEvent::Close(id)]);
    engine.publish(&ch("/foo"), msg("/foo", "2")).await.unwrap();
    assert!(queue_of(&engine, &id).await.is_empty());
    // Destroying twice, or an unknown client, is harmless and silent.
    engine.destroy_client(&id).await.unwrap();
    assert_eq!(rec.events().len(), 7);
    engine.shutdown().await;
}

/// Subscribe and unsubscribe report a change only when there is one.
pub async fn subscription_events_fire_only_on_change<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    assert_eq!(engine.subscribe(&id, &ch("/foo/**")).await.unwrap(), Subscribed::Added);
    assert_eq!(engine.subscribe(&id, &ch("/foo/**")).await.unwrap(), Subscribed::Unchanged);
    assert!(engine.unsubscribe(&id, &ch("/foo/**")).await.unwrap());
    assert!(!engine.unsubscribe(&id, &ch("/foo/**")).await.unwrap());
    assert!(!engine.unsubscribe(&id, &ch("/never")).await.unwrap());
    assert_eq!(
        rec.events()[1..],
        [
            EngineEvent::Subscribe(id, "/foo/**".into()),
            EngineEvent::Unsubscribe(id, "/foo/**".into())
        ]
    );
    engine.shutdown().await;
}

/// Publish reaches exactly the clients with a matching name or pattern.
pub async fn publish_routes_by_name_and_wildcards<E: Engine>(engine: E) {
    let (engine, _rec) = start(engine);
    let subs = ["/a/b", "/a/*", "/a/**", "/*", "/**", "/a/b/c", "/x"];
    let mut ids = Vec::new();
    for channel in subs {
        let id = engine.create_client().await.unwrap();
        engine.subscribe(&id, &ch(channel)).await.unwrap();
        ids.push((channel, id));
    }
    let cases: [(&str, &[&str]); 4] = [
        ("/a/b", &["/a/b", "/a/*", "/a/**", "/**"]),
        ("/a/b/c", &["/a/**", "/**", "/a/b/c"]),
        ("/a", &["/*", "/**"]),
        ("/nobody/listens/here", &["/**"]),
    ];
    for (published, expected) in cases {
        engine.publish(&ch(published), msg(published, "1")).await.unwrap();
        for (channel, id) in &ids {
            let got = queue_of(&engine, id).await;
            let want = usize::from(expected.contains(channel));
            assert_eq!(got.len(), want, "publish {published}, subscriber of {channel}");
        }
    }
    engine.shutdown().await;
}

/// A client whose subscriptions overlap gets one copy per publish (two for two
/// publishes), and is told it has mail.
pub async fn delivers_once_per_client_per_publish<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    let other = engine.create_client().await.unwrap();
    for channel in ["/a/b", "/a/*", "/a/**", "/**"] {
        engine.subscribe(&id, &ch(channel)).await.unwrap();
    }
    engine.subscribe(&other, &ch("/a/b")).await.unwrap();
    engine.publish(&ch("/a/b"), msg("/a/b", r#""first""#)).await.unwrap();
    engine.publish(&ch("/a/b"), msg("/a/b", r#""ünïcödé ✓""#)).await.unwrap();
    assert_eq!(
        queue_of(&engine, &id).await,
        [r#"{"channel":"/a/b","data":"first"}"#, r#"{"channel":"/a/b","data":"ünïcödé ✓"}"#]
    );
    assert_eq!(queue_of(&engine, &other).await.len(), 2);
    assert!(queue_of(&engine, &id).await.is_empty(), "take_queue drains");
    // A networked engine may hear of mail a moment after the publish returns
    // (Redis pub/sub): wait for it a little.
    let mail_of = |id: ClientId| rec.mail().iter().filter(|m| **m == id).count();
    for _ in 0..100 {
        if mail_of(id) >= 2 {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mail_of(id), 2);
    engine.shutdown().await;
}

/// After unsubscribing, a client no longer receives the channel's messages.
pub async fn unsubscribed_clients_receive_nothing<E: Engine>(engine: E) {
    let (engine, _rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    engine.subscribe(&id, &ch("/foo")).await.unwrap();
    engine.unsubscribe(&id, &ch("/foo")).await.unwrap();
    engine.publish(&ch("/foo"), msg("/foo", "1")).await.unwrap();
    assert!(queue_of(&engine, &id).await.is_empty());
    // Resubscribing after the channel's subscriber set was emptied works.
    engine.subscribe(&id, &ch("/foo")).await.unwrap();
    engine.publish(&ch("/foo"), msg("/foo", "2")).await.unwrap();
    assert_eq!(queue_of(&engine, &id).await.len(), 1);
    engine.shutdown().await;
}

/// A client may hold at most `max_subscriptions`; more are refused, silently.
pub async fn refuses_subscriptions_past_the_limit<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    for i in 0..LIMITS.max_subscriptions {
        assert_eq!(engine.subscribe(&id, &ch(&format!("/c{i}"))).await.unwrap(), Subscribed::Added);
    }
    assert_eq!(engine.subscribe(&id, &ch("/one/more")).await.unwrap(), Subscribed::LimitReached);
    assert_eq!(engine.subscribe(&id, &ch("/c0")).await.unwrap(), Subscribed::Unchanged);
    engine.publish(&ch("/one/more"), msg("/one/more", "1")).await.unwrap();
    assert!(queue_of(&engine, &id).await.is_empty());
    assert_eq!(rec.events().len(), 1 + LIMITS.max_subscriptions);
    engine.unsubscribe(&id, &ch("/c0")).await.unwrap();
    assert_eq!(engine.subscribe(&id, &ch("/one/more")).await.unwrap(), Subscribed::Added);
    engine.shutdown().await;
}

/// A client whose queue is full when a message arrives is destroyed; others are
/// unaffected.
pub async fn destroys_a_client_whose_queue_overflows<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let slow = engine.create_client().await.unwrap();
    let fast = engine.create_client().await.unwrap();
    engine.subscribe(&slow, &ch("/feed")).await.unwrap();
    engine.subscribe(&fast, &ch("/feed")).await.unwrap();
    for i in 0..LIMITS.max_queue {
        engine.publish(&ch("/feed"), msg("/feed", &i.to_string())).await.unwrap();
        assert_eq!(queue_of(&engine, &fast).await.len(), 1);
    }
    assert!(engine.client_exists(&slow).await.unwrap(), "a full queue is still allowed");
    engine.publish(&ch("/feed"), msg("/feed", "\"overflow\"")).await.unwrap();
    assert!(!engine.client_exists(&slow).await.unwrap());
    assert!(rec.events().ends_with(&[EngineEvent::Disconnect(slow), EngineEvent::Close(slow)]));
    assert_eq!(queue_of(&engine, &fast).await, [r#"{"channel":"/feed","data":"overflow"}"#]);
    engine.shutdown().await;
}

/// The bytes queued for a client are bounded too: a client whose queued JSON would
/// pass [`Limits::max_queue_bytes`] is destroyed, however few messages that is.
pub async fn destroys_a_client_whose_queue_passes_its_byte_limit<E: Engine>(engine: E) {
    let (engine, rec) = start(engine);
    let slow = engine.create_client().await.unwrap();
    engine.subscribe(&slow, &ch("/feed")).await.unwrap();
    // 150 bytes queued (two messages of 75): under the limit of 200.
    let big = msg("/feed", &format!("\"{}\"", "x".repeat(75 - 29)));
    assert_eq!(big.json().len(), 75);
    engine.publish(&ch("/feed"), big.clone()).await.unwrap();
    engine.publish(&ch("/feed"), big.clone()).await.unwrap();
    assert!(engine.client_exists(&slow).await.unwrap(), "150 of 200 bytes is allowed");
    // Draining the queue frees its bytes.
    assert_eq!(queue_of(&engine, &slow).await.len(), 2);
    engine.publish(&ch("/feed"), big.clone()).await.unwrap();
    engine.publish(&ch("/feed"), big.clone()).await.unwrap();
    assert!(engine.client_exists(&slow).await.unwrap());
    // A third would make 225.
    engine.publish(&ch("/feed"), big).await.unwrap();
    assert!(!engine.client_exists(&slow).await.unwrap());
    assert!(rec.events().ends_with(&[EngineEvent::Disconnect(slow), EngineEvent::Close(slow)]));
    engine.shutdown().await;
}

/// A long-poll connect that asks again with the same id gets the messages it was
/// handed last time again, ahead of newer ones; a connect with another id (the
/// client got the answer), or a socket push, never sees them again.
pub async fn a_connect_asking_again_gets_its_answer_again<E: Engine>(engine: E) {
    let (engine, _rec) = start(engine);
    let id = engine.create_client().await.unwrap();
    engine.subscribe(&id, &ch("/feed")).await.unwrap();
    engine.publish(&ch("/feed"), msg("/feed", "1")).await.unwrap();
    assert_eq!(taken(&engine, &id, Some("a")).await.len(), 1);
    engine.publish(&ch("/feed"), msg("/feed", "2")).await.unwrap();
    // "a" again: its answer was lost; 1 comes again, then 2.
    let again = taken(&engine, &id, Some("a")).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again[0].contains("\"data\":1") && again[1].contains("\"data\":2"), "{again:?}");
    // "b": the client got "a"'s answer; nothing again.
    assert!(taken(&engine, &id, Some("b")).await.is_empty());
    assert!(taken(&engine, &id, Some("a")).await.is_empty(), "only the last answer is kept");
    engine.publish(&ch("/feed"), msg("/feed", "3")).await.unwrap();
    assert_eq!(taken(&engine, &id, Some("c")).await.len(), 1);
    // A push down a socket forgets "c"'s answer.
    assert!(taken(&engine, &id, None).await.is_empty());
    assert!(taken(&engine, &id, Some("c")).await.is_empty());
    engine.shutdown().await;
}

/// Declares one test per conformance check, each on a fresh engine from `$make`.
///
/// ```ignore
/// faye_engine::conformance_tests!(#[tokio::test(start_paused = true)] MemoryEngine::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (#[$attr:meta] $make:expr) => {
        $crate::conformance_tests!(@each #[$attr] $make;
            creates_unique_base36_clients,
            expires_two_timeouts_after_the_last_ping,
            destroy_unsubscribes_and_reports_disconnect_then_close,
            subscription_events_fire_only_on_change,
            publish_routes_by_name_and_wildcards,
            delivers_once_per_client_per_publish,
            unsubscribed_clients_receive_nothing,
            refuses_subscriptions_past_the_limit,
            destroys_a_client_whose_queue_overflows,
            destroys_a_client_whose_queue_passes_its_byte_limit,
            a_connect_asking_again_gets_its_answer_again,
        );
    };
    (@each #[$attr:meta] $make:expr; $($check:ident),* $(,)?) => {$(
        #[$attr]
        async fn $check() {
            $crate::testing::$check($make).await;
        }
    )*};
}
