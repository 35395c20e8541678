//! TLS termination for `faye serve --tls-cert FILE --tls-key FILE`: rustls with
//! ring, HTTP/1.1 and HTTP/2 by ALPN, and a certificate reloaded without a
//! restart, on SIGHUP or when either file changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The certificate in use; replaced whole on reload.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Reads a certificate chain and its key.
fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .with_context(|| format!("unsupported private key in {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(certified)
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// The TLS acceptor for `cert` and `key`, and a task that reloads them on SIGHUP
/// or when they change. A reload that fails keeps the certificate in use (and
/// says why in the log).
pub(crate) fn acceptor(cert: PathBuf, key: PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let resolver = Arc::new(Reloading { current: RwLock::new(Arc::new(load(&cert, &key)?)) });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = modified(&[&cert, &key]);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let why = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = tick.tick() => {
                    let now = modified(&[&cert, &key]);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the files changed"
                }
            };
            match load(&cert, &key) {
                Ok(certified) => {
                    *resolver.current.write().unwrap_or_else(|e| e.into_inner()) =
                        Arc::new(certified);
                    tracing::info!(cert = %cert.display(), why, "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        why,
                        "TLS certificate not reloaded; keeping the one in use"
                    );
                }
            }
        }
    });
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
