//! A Redis engine on a throwaway redis-server, for the tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use faye_engine::testing::Recorder;
use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, Limits, Subscribed,
};
use faye_redis::{FayeRedisEngine, RedisConfig, RedisEngine};
use faye_testkit::redis::RedisServer;

/// A Redis engine that owns the redis-server it runs on (or the servers: a
/// Sentinel set-up, a Cluster), so the servers live as long as the test's engine
/// and are killed with it.
#[derive(Debug)]
pub struct TestEngine<S = RedisServer, E = RedisEngine> {
    pub engine: E,
    pub server: Arc<S>,
}

impl<S, E: Clone> Clone for TestEngine<S, E> {
    fn clone(&self) -> Self {
        Self { engine: self.engine.clone(), server: self.server.clone() }
    }
}

impl<S> TestEngine<S> {
    /// An engine connected with `config`, owning `server`.
    pub async fn connect(server: Arc<S>, config: RedisConfig) -> Self {
        let engine = RedisEngine::connect(config).await.expect("connect to the test Redis");
        Self { engine, server }
    }
}

impl TestEngine {
    /// A fresh redis-server and an engine on it.
    pub async fn fresh() -> Self {
        let server = Arc::new(RedisServer::start());
        Self::on(server).await
    }

    /// Another engine ("node") on the same redis-server.
    pub async fn on(server: Arc<RedisServer>) -> Self {
        Self::configured(server, |config| config).await
    }

    /// As [`TestEngine::on`], with settings changed by `configure`.
    pub async fn configured(
        server: Arc<RedisServer>,
        configure: impl FnOnce(RedisConfig) -> RedisConfig,
    ) -> Self {
        let config = configure(RedisConfig::new(server.url()).namespace("test"));
        let engine = RedisEngine::connect(config).await.expect("connect to the test redis-server");
        Self { engine, server }
    }
}

/// The faye-redis layout's engine ([`FayeRedisEngine`]) on a throwaway redis-server.
pub type FayeLayout = TestEngine<RedisServer, FayeRedisEngine>;

impl FayeLayout {
    /// A fresh redis-server and an engine in the faye-redis layout on it.
    pub async fn fresh_layout() -> Self {
        Self::layout_on(Arc::new(RedisServer::start())).await
    }

    /// Another node in the faye-redis layout on the same redis-server, with
    /// faye-redis's default (empty) namespace.
    pub async fn layout_on(server: Arc<RedisServer>) -> Self {
        let config = RedisConfig::new(server.url()).namespace("");
        let engine =
            FayeRedisEngine::connect(config).await.expect("connect to the test redis-server");
        Self { engine, server }
    }
}

impl<S, E> Engine for TestEngine<S, E>
where
    S: std::fmt::Debug + Send + Sync + 'static,
    E: Engine,
{
    fn start(&self, ctx: EngineContext) {
        self.engine.start(ctx);
    }
    async fn create_client(&self) -> Result<ClientId, EngineError> {
        self.engine.create_client().await
    }
    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        self.engine.client_exists(client).await
    }
    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        self.engine.destroy_client(client).await
    }
    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        self.engine.ping(client).await
    }
    async fn subscribe(
        &self,
        client: &ClientId,
        channel: &Channel,
    ) -> Result<Subscribed, EngineError> {
        self.engine.subscribe(client, channel).await
    }
    async fn unsubscribe(&self, client: &ClientId, channel: &Channel) -> Result<bool, EngineError> {
        self.engine.unsubscribe(client, channel).await
    }
    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        self.engine.publish(channel, message).await
    }
    async fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> Result<Vec<EncodedMessage>, EngineError> {
        self.engine.take_queue(client, request).await
    }
    async fn shutdown(&self) {
        self.engine.shutdown().await;
    }
}

/// Starts `engine` with a server timeout of `timeout` and default limits; what it
/// reports is recorded.
pub fn start<E: Engine>(engine: &E, timeout: Duration) -> Arc<Recorder> {
    let rec = Arc::new(Recorder::default());
    engine.start(EngineContext { listener: rec.clone(), timeout, limits: Limits::default() });
    rec
}

/// A channel the tests know to be valid.
pub fn ch(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

/// A new long-poll connect id each call: a test taking a queue with it acts as a
/// client that got every earlier answer (see `Engine::take_queue`).
#[allow(dead_code)]
pub fn poll() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string()
}

/// The `data` numbers of messages like `{"channel":..., "data": 7}`.
#[allow(dead_code)]
pub fn numbers(messages: Vec<EncodedMessage>) -> Vec<usize> {
    messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.json()).unwrap();
            v["data"].as_u64().unwrap() as usize
        })
        .collect()
}

/// Takes `id`'s queue on `engine` (as long-poll connects) until it holds `n`
/// messages, for up to 5 s; a failed take (Redis failing over) is tried again.
#[allow(dead_code)]
pub async fn take_numbers<E: Engine>(engine: &E, id: &ClientId, n: usize) -> Vec<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        if let Ok(messages) = engine.take_queue(id, Some(&poll())).await {
            got.extend(numbers(messages));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    got
}
