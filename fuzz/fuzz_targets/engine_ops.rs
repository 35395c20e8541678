//! The in-memory engine against a model: clients, subscriptions, routing through
//! `channel::matches` (deduplicated per client), the subscription limit, the queue
//! limit (a client whose queue is full when a message arrives is destroyed), and the
//! events and mail the engine reports.
#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineEvent, EngineListener, Limits,
    MemoryEngine, Subscribed,
};
use faye_protocol::channel;
use libfuzzer_sys::fuzz_target;

/// Names and patterns clients subscribe to.
const CHANNELS: &[&str] = &[
    "/a", "/a/b", "/a/*", "/a/**", "/**", "/*", "/b/c", "/b/*", "/a/b/c", "/a/b/*", "/b/**", "/c",
];
/// Names publishes go to.
const NAMES: &[&str] = &["/a", "/a/b", "/b/c", "/a/b/c", "/c", "/b", "/a/c", "/d/e/f"];

const MAX_SUBSCRIPTIONS: usize = 4;
const MAX_QUEUE: usize = 8;
/// Client slots: ids ever created, live or not (ops on dead ids are part of the test).
const MAX_CLIENTS: usize = 6;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Create,
    Destroy(u8),
    Subscribe(u8, u8),
    Unsubscribe(u8, u8),
    Publish(u8),
    Take(u8),
    Ping(u8),
}

/// What the engine reported, as comparable strings.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
}

impl EngineListener for Recorder {
    fn mail(&self, client: &ClientId) {
        self.log.lock().unwrap().push(format!("mail {client}"));
    }
    fn event(&self, event: EngineEvent) {
        self.log.lock().unwrap().push(format!("{event:?}"));
    }
}

impl Recorder {
    /// Everything reported since the last call, sorted: the order of the
    /// unsubscribes of a destroyed client is unspecified.
    fn drain(&self) -> Vec<String> {
        let mut log = std::mem::take(&mut *self.log.lock().unwrap());
        log.sort();
        log
    }
}

#[derive(Default)]
struct ModelClient {
    subscriptions: BTreeSet<&'static str>,
    queue: Vec<String>,
}

#[derive(Default)]
struct Model {
    clients: HashMap<ClientId, ModelClient>,
    expected_log: Vec<String>,
}

impl Model {
    fn destroy(&mut self, id: ClientId) {
        if let Some(client) = self.clients.remove(&id) {
            for channel in client.subscriptions {
                self.expected_log
                    .push(format!("{:?}", EngineEvent::Unsubscribe(id, channel.into())));
            }
            self.expected_log.push(format!("{:?}", EngineEvent::Disconnect(id)));
            self.expected_log.push(format!("{:?}", EngineEvent::Close(id)));
        }
    }

    fn publish(&mut self, name: &str, message: &str) {
        let mut too_slow = Vec::new();
        for (id, client) in &mut self.clients {
            if !client.subscriptions.iter().any(|p| channel::matches(p, name)) {
                continue;
            }
            if client.queue.len() >= MAX_QUEUE {
                too_slow.push(*id);
            } else {
                client.queue.push(message.to_owned());
                self.expected_log.push(format!("mail {id}"));
            }
        }
        for id in too_slow {
            self.destroy(id);
        }
    }

    fn take_log(&mut self) -> Vec<String> {
        let mut log = std::mem::take(&mut self.expected_log);
        log.sort();
        log
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
});

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(i) % items.len()])
}

async fn run(ops: Vec<Op>) {
    let recorder = Arc::new(Recorder::default());
    let engine = MemoryEngine::new();
    engine.start(EngineContext {
        listener: recorder.clone(),
        timeout: Duration::from_secs(3600),
        limits: Limits {
            max_subscriptions: MAX_SUBSCRIPTIONS,
            max_queue: MAX_QUEUE,
            max_queue_bytes: usize::MAX,
        },
    });
    let mut model = Model::default();
    let mut ids: Vec<ClientId> = Vec::new();
    let mut counter = 0u64;

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create => {
                if ids.len() < MAX_CLIENTS {
                    let id = engine.create_client().await.unwrap();
                    assert!(!ids.contains(&id), "duplicate client id {id}");
                    ids.push(id);
                    model.clients.insert(id, ModelClient::default());
                    model.expected_log.push(format!("{:?}", EngineEvent::Handshake(id)));
                }
            }
            Op::Destroy(c) => {
                let Some(id) = pick(&ids, c) else { continue };
                engine.destroy_client(&id).await.unwrap();
                model.destroy(id);
            }
            Op::Subscribe(c, ch) => {
                let Some(id) = pick(&ids, c) else { continue };
                let channel = pick(CHANNELS, ch).unwrap();
                let got = engine.subscribe(&id, &Channel::parse(channel).unwrap()).await.unwrap();
                let want = match model.clients.get_mut(&id) {
                    None => Subscribed::Unchanged,
                    Some(client) if client.subscriptions.contains(channel) => Subscribed::Unchanged,
                    Some(client) if client.subscriptions.len() >= MAX_SUBSCRIPTIONS => {
                        Subscribed::LimitReached
                    }
                    Some(client) => {
                        client.subscriptions.insert(channel);
                        model
                            .expected_log
                            .push(format!("{:?}", EngineEvent::Subscribe(id, channel.into())));
                        Subscribed::Added
                    }
                };
                assert_eq!(got, want, "step {step}: subscribe {id} {channel}");
            }
            Op::Unsubscribe(c, ch) => {
                let Some(id) = pick(&ids, c) else { continue };
                let channel = pick(CHANNELS, ch).unwrap();
                let got = engine.unsubscribe(&id, &Channel::parse(channel).unwrap()).await.unwrap();
                let want = model
                    .clients
                    .get_mut(&id)
                    .is_some_and(|client| client.subscriptions.remove(channel));
                if want {
                    model
                        .expected_log
                        .push(format!("{:?}", EngineEvent::Unsubscribe(id, channel.into())));
                }
                assert_eq!(got, want, "step {step}: unsubscribe {id} {channel}");
            }
            Op::Publish(ch) => {
                let name = pick(NAMES, ch).unwrap();
                counter += 1;
                let message = format!(r#"{{"channel":"{name}","data":{counter}}}"#);
                engine
                    .publish(
                        &Channel::parse(name).unwrap(),
                        EncodedMessage::from_json(message.as_bytes()),
                    )
                    .await
                    .unwrap();
                model.publish(name, &message);
            }
            Op::Take(c) => {
                let Some(id) = pick(&ids, c) else { continue };
                let got: Vec<String> = engine
                    .take_queue(&id, None)
                    .await
                    .unwrap()
                    .iter()
                    .map(|m| String::from_utf8(m.json().to_vec()).unwrap())
                    .collect();
                let want = model.clients.get_mut(&id).map(|c| std::mem::take(&mut c.queue));
                assert_eq!(got, want.unwrap_or_default(), "step {step}: queue of {id}");
            }
            Op::Ping(c) => {
                let Some(id) = pick(&ids, c) else { continue };
                engine.ping(&id).await.unwrap();
            }
        }
        for id in &ids {
            let exists = engine.client_exists(id).await.unwrap();
            assert_eq!(
                exists,
                model.clients.contains_key(id),
                "step {step} ({op:?}): client_exists({id})"
            );
        }
        assert_eq!(recorder.drain(), model.take_log(), "step {step} ({op:?}): events and mail");
    }

    // Whatever is left queued is still exactly what the model holds.
    for id in &ids {
        let got = engine.take_queue(id, None).await.unwrap();
        let want = model.clients.get(id).map_or(0, |c| c.queue.len());
        assert_eq!(got.len(), want, "final queue of {id}");
    }
    engine.shutdown().await;
    settle().await;
}

/// Lets the runtime run what was spawned or aborted during the input (the engine's
/// expiry sweeper). A current-thread `block_on` whose future never waits does not run other
/// tasks, so without this they would pile up from input to input.
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

fuzz_target!(|ops: Vec<Op>| {
    RUNTIME.block_on(run(ops));
});
