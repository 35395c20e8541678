//! The Redis engine over TLS (`rediss://`): a redis-server listening with a
//! certificate signed by a CA the test makes, the engine trusting that CA
//! (`RedisConfig::ca_cert`). Each check on its own redis-server.
//!
//! If this machine's redis-server was built without TLS, every test here says so
//! and passes without checking anything (see `tls_supported`); Debian's is built
//! with TLS.

mod common;

use std::sync::Arc;

use common::TestEngine;
use faye_redis::{RedisConfig, RedisEngine};
use faye_testkit::redis::{RedisServer, TempDir, tls_supported};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A redis-server speaking TLS with a certificate for `localhost` and 127.0.0.1,
/// signed by a CA made here; its files live in `dir`.
#[derive(Debug)]
struct TlsRedis {
    server: RedisServer,
    /// The CA's certificate (PEM).
    ca: String,
    // Dropped after the server.
    _dir: TempDir,
}

impl TlsRedis {
    /// `None` (having said why) if redis-server has no TLS.
    fn start() -> Option<Self> {
        if let Err(why) = tls_supported() {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let dir = TempDir::new("tls");
        let (cert_file, key_file) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let server = RedisServer::start_tls(&cert_file, &key_file);
        Some(Self { server, ca, _dir: dir })
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::new(self.server.tls_url()).namespace("test").ca_cert(self.ca.as_bytes())
    }
}

/// An engine over TLS on a fresh server; `None` if redis-server has no TLS.
async fn fresh() -> Option<TestEngine<TlsRedis>> {
    let redis = Arc::new(TlsRedis::start()?);
    let config = redis.config();
    Some(TestEngine::connect(redis, config).await)
}

faye_engine::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    match fresh().await {
        Some(engine) => engine,
        None => return,
    }
);

/// The engine really speaks TLS and checks the certificate: without the CA the
/// server's certificate is refused, and plain Redis on the TLS port gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_the_servers_certificate() {
    let Some(redis) = TlsRedis::start() else {
        return;
    };
    let timeout = std::time::Duration::from_secs(2);
    let untrusted = RedisConfig::new(redis.server.tls_url()).response_timeout(timeout);
    let err = RedisEngine::connect(untrusted).await.expect_err("an unknown CA must be refused");
    assert!(err.to_string().contains("cannot use Redis"), "{err}");

    let tls_port = redis.server.tls_port.unwrap();
    let plain =
        RedisConfig::new(format!("redis://127.0.0.1:{tls_port}/")).response_timeout(timeout);
    assert!(RedisEngine::connect(plain).await.is_err(), "plain text on the TLS port");

    // A CA certificate with a plain URL is a mistake, said at once.
    let mixed = RedisConfig::new(redis.server.url()).ca_cert(redis.ca.as_bytes());
    assert!(RedisEngine::connect(mixed).await.is_err());

    // With the CA, a round trip through the engine works.
    let engine = RedisEngine::connect(redis.config()).await.expect("connect over TLS");
    assert!(!engine.node().is_empty());
    // The CA as a file, as `faye serve --redis-ca-cert` gives it.
    let dir = TempDir::new("ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &redis.ca).unwrap();
    let config = RedisConfig::new(redis.server.tls_url()).ca_cert_file(&ca_file).unwrap();
    RedisEngine::connect(config).await.expect("connect with the CA from a file");
}
