//! `faye serve --tls-cert --tls-key`: a TLS round trip over HTTP/1.1 and
//! WebSocket with the test's own CA, HTTP/2 by ALPN, and a certificate reloaded
//! (when the files change, and on SIGHUP) as seen by a new connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faye_testkit::server::serve_command;
use faye_testkit::{QUICK, within};
use futures_util::{SinkExt as _, StreamExt as _};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_rustls::client::TlsStream;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A fresh server certificate and key, as PEM, and the certificate's DER.
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faye-tls-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `path` through a rename, so the file changes at once, with
/// the modification time `mtime` if given.
fn replace(path: &Path, text: &str, mtime: Option<std::time::SystemTime>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    if let Some(mtime) = mtime {
        std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(cert: &Path, key: &Path) -> (Child, SocketAddr) {
    let mut child = serve_command(env!("CARGO_BIN_EXE_faye"), &[])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .spawn()
        .expect("spawn faye");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within(Duration::from_secs(20), "the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let rest =
        line.strip_prefix("faye-rs listening on https://").unwrap_or_else(|| panic!("{line}"));
    (child, rest.split('/').next().unwrap().parse().unwrap())
}

async fn tls_connect(addr: SocketAddr, ca: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    within(QUICK, "the TLS handshake", connector.connect(name, tcp)).await.expect("TLS handshake")
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs: &[CertificateDer<'_>] = stream.get_ref().1.peer_certificates().unwrap();
    certs[0].to_vec()
}

const HANDSHAKE: &str = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling","websocket"]}]"#;

/// A Bayeux handshake over HTTP/1.1 on `stream`; the reply.
async fn http_handshake(mut stream: TlsStream<TcpStream>) -> Value {
    let request = format!(
        "POST /bayeux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{HANDSHAKE}",
        HANDSHAKE.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(QUICK, "the handshake reply", stream.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[tokio::test]
async fn tls_round_trips_and_reloads() {
    let ca = Ca::new();
    let dir = temp_dir("reload");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key, first_der) = ca.leaf();
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let (child, addr) = start(&cert_file, &key_file).await;

    // HTTP/1.1 over TLS: a handshake.
    let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_cert(&stream), first_der);
    let reply = http_handshake(stream).await;
    assert_eq!(reply[0]["successful"], true, "{reply}");

    // WebSocket over TLS: a handshake.
    let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
    let (mut ws, _) = within(
        QUICK,
        "the WebSocket upgrade",
        tokio_tungstenite::client_async("wss://localhost/bayeux", stream),
    )
    .await
    .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(HANDSHAKE)).await.unwrap();
    let frame = within(QUICK, "the WebSocket reply", ws.next()).await.unwrap().unwrap();
    let reply: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(reply[0]["successful"], true, "{reply}");

    // HTTP/2 by ALPN: the server's preface (a SETTINGS frame) answers ours.
    let mut stream = tls_connect(addr, &ca.pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    within(QUICK, "the server's HTTP/2 preface", stream.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[3], 0x4, "not a SETTINGS frame: {head:?}");

    // A certificate whose files change is used by the next connections.
    let (cert, key, second_der) = ca.leaf();
    replace(&key_file, &key, None);
    replace(&cert_file, &cert, None);
    let start_wait = Instant::now();
    loop {
        let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
        if peer_cert(&stream) == second_der {
            assert_eq!(http_handshake(stream).await[0]["successful"], true);
            break;
        }
        assert_eq!(peer_cert(&stream), first_der);
        assert!(start_wait.elapsed() < QUICK, "the changed certificate was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // On SIGHUP, even when the files' times say nothing changed.
    let (cert, key, third_der) = ca.leaf();
    let times = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (cert_time, key_time) = (times(&cert_file), times(&key_file));
    replace(&key_file, &key, Some(key_time));
    replace(&cert_file, &cert, Some(cert_time));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&stream), second_der, "reloaded without a change in the files' times");
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill").args(["-s", "HUP", &pid]).status().unwrap().success()
    );
    let start_wait = Instant::now();
    loop {
        let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
        if peer_cert(&stream) == third_der {
            break;
        }
        assert!(start_wait.elapsed() < QUICK, "SIGHUP did not reload the certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file keeps the certificate in use.
    replace(&cert_file, "not a certificate", None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stream = tls_connect(addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&stream), third_der);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_or_mismatched_key_is_refused_at_start() {
    let ca = Ca::new();
    let dir = temp_dir("bad");
    let (cert, _, _) = ca.leaf();
    let (_, other_key, _) = ca.leaf();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, other_key).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faye"))
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not the key of {}",
            key_file.display(),
            cert_file.display()
        )),
        "{stderr}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faye"))
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(&cert_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS needs both --tls-cert and --tls-key")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
