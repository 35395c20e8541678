//! Reaching the server: TCP, then an HTTP CONNECT tunnel when a proxy applies,
//! then TLS for `https`/`wss`. Both transports open their connections here, so
//! they reach the server the same way.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;

/// Where a connection goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target {
    /// The target of an `http`, `https`, `ws` or `wss` URI.
    pub(crate) fn of(uri: &Uri) -> Result<Self, Error> {
        let tls = match uri.scheme_str() {
            Some("http" | "ws") => false,
            Some("https" | "wss") => true,
            _ => return Err(Error::Url(format!("{uri}: not an http(s) or ws(s) URL"))),
        };
        let host = uri.host().ok_or_else(|| Error::Url(format!("{uri}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { host, port, tls })
    }

    /// `host:port` as in a Host header or a CONNECT line.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How to reach servers: TLS roots, and the proxy if any.
#[derive(Clone)]
pub(crate) struct Net {
    tls: TlsConnector,
    proxy: ProxyRule,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("proxy", &self.proxy).finish_non_exhaustive()
    }
}

/// Which proxy a connection goes through.
#[derive(Debug, Clone)]
pub(crate) enum ProxyRule {
    /// None: connect directly.
    Direct,
    /// This one, for every server.
    Explicit(Uri),
    /// `HTTP_PROXY` for cleartext targets, `HTTPS_PROXY` for TLS ones, except for
    /// hosts `NO_PROXY` names.
    Environment { http: Option<Uri>, https: Option<Uri>, no_proxy: Vec<String> },
}

impl ProxyRule {
    /// The rule the environment gives (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`,
    /// upper or lower case; lower case wins, as in curl).
    pub(crate) fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name.to_lowercase())
                .or_else(|_| std::env::var(name))
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        let uri = |name: &str| var(name).and_then(|v| parse_proxy(&v).ok());
        let no_proxy = var("NO_PROXY")
            .map(|v| {
                v.split(',').map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty()).collect()
            })
            .unwrap_or_default();
        Self::Environment { http: uri("HTTP_PROXY"), https: uri("HTTPS_PROXY"), no_proxy }
    }

    fn for_target(&self, target: &Target) -> Option<&Uri> {
        match self {
            Self::Direct => None,
            Self::Explicit(uri) => Some(uri),
            Self::Environment { http, https, no_proxy } => {
                if bypass(no_proxy, &target.host) {
                    return None;
                }
                if target.tls { https.as_ref() } else { http.as_ref() }
            }
        }
    }
}

/// A proxy given as `host:port` or `http://[user:password@]host:port`.
pub(crate) fn parse_proxy(s: &str) -> Result<Uri, Error> {
    let s = s.trim();
    let full = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    let uri: Uri = full.parse().map_err(|e| Error::Url(format!("proxy {s}: {e}")))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        _ => Err(Error::Url(format!("proxy {s}: only http:// proxies are supported"))),
    }
}

/// Whether `NO_PROXY`'s entries exempt `host`: `*`, the host itself, or a domain
/// it is in (`example.com` and `.example.com` both cover `a.example.com`).
fn bypass(no_proxy: &[String], host: &str) -> bool {
    let host = host.to_lowercase();
    no_proxy.iter().any(|entry| {
        let entry = entry.split(':').next().unwrap_or(entry);
        let domain = entry.trim_start_matches('.');
        entry == "*" || host == domain || host.ends_with(&format!(".{domain}"))
    })
}

impl Net {
    pub(crate) fn new(extra_roots: &[CertificateDer<'static>], proxy: ProxyRule) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        // The system's roots may be missing or partly unreadable; the user's own
        // are what matter for a private server.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for cert in extra_roots {
            let _ = roots.add(cert.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self { tls: TlsConnector::from(Arc::new(config)), proxy }
    }

    /// A connection to `target`, through the proxy that applies, with TLS when
    /// the target needs it.
    pub(crate) async fn connect(&self, target: &Target) -> Result<Stream, Error> {
        let tcp = match self.proxy.for_target(target) {
            None => TcpStream::connect((target.host.as_str(), target.port)).await?,
            Some(proxy) => tunnel(proxy, target).await?,
        };
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| Error::Url(format!("{}: {e}", target.host)))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A TCP connection to `target` through `proxy`'s CONNECT method.
async fn tunnel(proxy: &Uri, target: &Target) -> Result<TcpStream, Error> {
    let host = proxy.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = proxy.port_u16().unwrap_or(80);
    let mut tcp = TcpStream::connect((host, port)).await?;
    let authority = target.authority();
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(userinfo) =
        proxy.authority().and_then(|a| a.as_str().rsplit_once('@')).map(|(u, _)| u)
    {
        let decoded = percent_decode(userinfo);
        request.push_str(&format!("Proxy-Authorization: Basic {}\r\n", base64(decoded.as_bytes())));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    // Read the proxy's answer byte by byte up to its blank line, so nothing of
    // the tunnelled stream is consumed.
    let mut reader = BufReader::with_capacity(1, &mut tcp);
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    let ok = status.split_whitespace().nth(1).is_some_and(|code| code.starts_with('2'));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    if !ok {
        return Err(Error::Proxy(format!(
            "{proxy} refused CONNECT {authority}: {}",
            status.trim_end()
        )));
    }
    Ok(tcp)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Standard base64 with padding (for `Basic` credentials).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A connection to a server: plain TCP or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
    }

    #[test]
    fn no_proxy_covers_hosts_and_domains() {
        let list = vec!["example.com".to_owned(), ".internal".to_owned(), "10.0.0.1:80".to_owned()];
        assert!(bypass(&list, "example.com"));
        assert!(bypass(&list, "a.example.com"));
        assert!(bypass(&list, "db.internal"));
        assert!(bypass(&list, "10.0.0.1"));
        assert!(!bypass(&list, "notexample.com"));
        assert!(bypass(&["*".to_owned()], "anything"));
    }

    #[test]
    fn proxies_parse_with_or_without_a_scheme() {
        assert_eq!(parse_proxy("127.0.0.1:3128").unwrap().port_u16(), Some(3128));
        assert!(parse_proxy("http://u:p@proxy:8080").is_ok());
        assert!(parse_proxy("socks5://proxy:1080").is_err());
    }
}
