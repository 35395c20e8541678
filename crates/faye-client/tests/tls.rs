//! faye-client over TLS: faye-rs terminating TLS with a certificate from the
//! test's own certificate authority, trusted by the client as an extra root.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scenarios::wait_state;
use common::{RustServer, next, only};
use faye_client::TransportKind::{self, LongPolling, WebSocket};
use faye_client::{ConnectionState, Reason};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS acceptor for `localhost` and the PEM of the CA that signed it.
fn tls() -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_pem)
}

async fn round_trip(kind: TransportKind) {
    let (acceptor, ca) = tls();
    let server = RustServer::start_with(Some(acceptor)).await;
    assert!(server.url().starts_with("https://localhost:"));
    let client = only(&server.url(), kind).ca_certs_pem(ca.as_bytes()).unwrap().build().unwrap();
    let mut s = client.subscribe("/secure").await.unwrap();
    client.publish("/secure", &"over TLS").await.unwrap();
    assert_eq!(next(&mut s).await.data_as::<String>().unwrap(), "over TLS");
    assert_eq!(client.state(), ConnectionState::Connected { transport: kind });
    let seen = common::seen_where(&server.seen, |v| v["channel"] == "/secure");
    assert_eq!(seen[0]["transport"], kind.name(), "the server saw it over {kind}");

    // Without the CA the server's certificate is refused, and the client says why.
    let stranger = only(&server.url(), kind).build().unwrap();
    let connect = stranger.connect();
    assert!(tokio::time::timeout(Duration::from_secs(1), connect).await.is_err());
    wait_state(&stranger, "a failed attempt", |s| matches!(s, ConnectionState::Reconnecting(_)))
        .await;
    match stranger.state() {
        ConnectionState::Reconnecting(Reason::Network(e)) => {
            assert!(e.contains("certificate"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn websocket_over_tls_with_an_extra_root() {
    round_trip(WebSocket).await;
}

#[tokio::test]
async fn long_polling_over_tls_with_an_extra_root() {
    round_trip(LongPolling).await;
}
