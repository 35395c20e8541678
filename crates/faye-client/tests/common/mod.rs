//! Servers for the client's tests: faye-rs in this process and Node Faye 1.4.3 in
//! a child process, each recording what it received; a TCP forwarder that can
//! break WebSockets; an HTTP CONNECT proxy.
#![allow(dead_code, unreachable_pub)]

pub mod scenarios;

/// Declares one test per scenario and transport, each on a fresh server made
/// by `$server` (an async expression).
#[macro_export]
macro_rules! each_transport {
    ($server:expr; $($name:ident => $scenario:ident),* $(,)?) => {
        mod websocket {
            use super::*;
            $(#[tokio::test] async fn $name() { $scenario(&$server, WebSocket).await; })*
        }
        mod long_polling {
            use super::*;
            $(#[tokio::test] async fn $name() { $scenario(&$server, LongPolling).await; })*
        }
    };
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faye_client::{Client, ReceivedMessage, Subscription, TransportKind};
use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService, ServeOptions};
use faye_protocol::Message;
use faye_server::{BoxFuture, Extension, RequestInfo, Server, ServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The next message of a subscription, within [`WAIT`].
pub async fn next(sub: &mut Subscription) -> ReceivedMessage {
    within("a message", sub.recv()).await.expect("the subscription is alive")
}

/// What a server received: one JSON record per message.
pub type Seen = Arc<Mutex<Vec<Value>>>;

pub fn seen_where(seen: &Seen, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    seen.lock().unwrap().iter().filter(|v| f(v)).cloned().collect()
}

/// A client whose reconnections are quick, for tests.
pub fn builder(url: &str) -> faye_client::ClientBuilder {
    Client::builder(url)
        .no_proxy()
        .retry(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(5))
}

pub fn only(url: &str, kind: TransportKind) -> faye_client::ClientBuilder {
    let other = match kind {
        TransportKind::WebSocket => TransportKind::LongPolling,
        _ => TransportKind::WebSocket,
    };
    builder(url).disable(other)
}

/// Records each incoming message with the transport and `X-Test` header of the
/// request it came in.
struct Recorder(Seen);

impl Extension for Recorder {
    fn incoming<'a>(
        &'a self,
        message: Message,
        request: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        if let Some(request) = request {
            let header = request.headers.get("x-test").and_then(|v| v.to_str().ok());
            self.0.lock().unwrap().push(json!({
                "id": message.id,
                "channel": message.channel,
                "clientId": message.client_id,
                "connectionType": message.connection_type,
                "transport": request.transport,
                "header": header,
                "ext": message.ext,
            }));
        }
        Box::pin(async move { Some(message) })
    }
}

/// faye-rs in this process on a port of its own, restartable on that port with
/// a fresh engine (every client forgotten).
pub struct RustServer {
    pub addr: SocketAddr,
    pub seen: Seen,
    pub server: Server<MemoryEngine>,
    faye: FayeService<MemoryEngine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    options: ServerOptions,
    pub deflate: bool,
}

impl RustServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        Self::start_with_options(ServerOptions::default().timeout(Duration::from_secs(10)), tls)
            .await
    }

    pub async fn start_with_options(
        options: ServerOptions,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let (server, faye, stop, task) =
            Self::run(listener, &seen, tls.clone(), options.clone(), false);
        Self {
            addr,
            seen,
            server,
            faye,
            stop: Some(stop),
            task: Some(task),
            tls,
            options,
            deflate: false,
        }
    }

    /// With `--websocket-deflate`.
    pub async fn start_deflate() -> Self {
        let mut server = Self::start().await;
        server.deflate = true;
        server.restart().await;
        server
    }

    fn run(
        listener: TcpListener,
        seen: &Seen,
        tls: Option<tokio_rustls::TlsAcceptor>,
        options: ServerOptions,
        deflate: bool,
    ) -> (Server<MemoryEngine>, FayeService<MemoryEngine>, oneshot::Sender<()>, JoinHandle<()>)
    {
        let server = Server::new(MemoryEngine::new(), options);
        server.add_extension(Arc::new(Recorder(seen.clone())));
        let faye =
            FayeService::new(server.clone(), FayeOptions::default().websocket_deflate(deflate));
        let (stop, stopped) = oneshot::channel::<()>();
        let mut serve_options = ServeOptions::default().drain_timeout(Duration::from_secs(1));
        if let Some(tls) = tls {
            serve_options = serve_options.tls(tls);
        }
        let signal = async move {
            let _ = stopped.await;
        };
        let task =
            tokio::spawn(faye_http::serve_with(listener, faye.clone(), signal, serve_options));
        (server, faye, stop, task)
    }

    pub fn url(&self) -> String {
        match self.tls {
            // The test certificate's name.
            Some(_) => format!("https://localhost:{}/bayeux", self.addr.port()),
            None => format!("http://{}/bayeux", self.addr),
        }
    }

    /// Stops the server (closing every connection) and starts a new one, with a
    /// new engine, on the same port.
    pub async fn restart(&mut self) {
        self.faye.shutdown(Duration::from_secs(1)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let listener = bind_again(self.addr).await;
        let (server, faye, stop, task) =
            Self::run(listener, &self.seen, self.tls.clone(), self.options.clone(), self.deflate);
        (self.server, self.faye, self.stop, self.task) = (server, faye, Some(stop), Some(task));
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Node Faye 1.4.3 (`interop/node_modules/faye`), run by
/// `tests/node_faye_server.cjs`; every message it receives is a JSON line on its
/// stdout, recorded in `seen`.
pub struct NodeServer {
    pub port: u16,
    pub seen: Seen,
    child: Child,
    deflate: bool,
}

impl NodeServer {
    pub async fn start(deflate: bool) -> Self {
        let seen = Seen::default();
        let (child, port) = Self::spawn(0, &seen, deflate).await;
        Self { port, seen, child, deflate }
    }

    async fn spawn(port: u16, seen: &Seen, deflate: bool) -> (Child, u16) {
        let modules = repo().join("interop/node_modules");
        assert!(
            modules.join("faye/package.json").exists(),
            "Node Faye is not installed: run `npm ci` in interop/ (and install node)"
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node_faye_server.cjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(&modules)
            .arg(port.to_string())
            .arg(if deflate { "deflate" } else { "plain" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (install Node.js 20 or newer)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = within("Node Faye to listen", lines.next_line()).await.unwrap().unwrap();
        let port: u16 = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .expect("the port line")
            .try_into()
            .unwrap();
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str(&line) {
                    seen.lock().unwrap().push(v);
                }
            }
        });
        (child, port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bayeux", self.port)
    }

    /// Kills Node and starts it again on the same port (every client forgotten).
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        let (child, _) = Self::spawn(self.port, &self.seen, self.deflate).await;
        self.child = child;
    }
}

/// A TCP forwarder to `upstream` that records the first bytes (the request head)
/// of each connection, and can break WebSockets: close the open ones and refuse
/// new upgrades, as a proxy that stops passing them would.
pub struct Forwarder {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    /// The first bytes the server sent back on each upgrade connection.
    pub upgrade_responses: Arc<Mutex<Vec<String>>>,
    /// Bytes the server sent on upgrade connections, all told.
    pub websocket_bytes_down: Arc<std::sync::atomic::AtomicU64>,
    /// HTTP requests sent and not yet answered: now, and the most at once.
    http_in_flight: Arc<Mutex<(usize, usize)>>,
    break_ws: watch::Sender<bool>,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let upgrade_responses: Arc<Mutex<Vec<String>>> = Arc::default();
        let websocket_bytes_down: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let (break_ws, broken) = watch::channel(false);
        let h = heads.clone();
        let (responses, down) = (upgrade_responses.clone(), websocket_bytes_down.clone());
        let http_in_flight: Arc<Mutex<(usize, usize)>> = Arc::default();
        let in_flight = http_in_flight.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let heads = h.clone();
                let (responses, down) = (responses.clone(), down.clone());
                let in_flight = in_flight.clone();
                let mut broken = broken.clone();
                tokio::spawn(async move {
                    let mut first = vec![0; 4096];
                    let Ok(n) = inbound.read(&mut first).await else { return };
                    first.truncate(n);
                    let head = String::from_utf8_lossy(&first).into_owned();
                    let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
                    heads.lock().unwrap().push(head);
                    if upgrade && *broken.borrow() {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    if outbound.write_all(&first).await.is_err() {
                        return;
                    }
                    if upgrade {
                        let (mut in_read, mut in_write) = inbound.split();
                        let (mut out_read, mut out_write) = outbound.split();
                        let up = tokio::io::copy(&mut in_read, &mut out_write);
                        let counted = async {
                            let mut buf = vec![0; 16 * 1024];
                            let mut first = true;
                            loop {
                                let n = out_read.read(&mut buf).await.unwrap_or(0);
                                if n == 0 || in_write.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                                if first {
                                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                                    responses.lock().unwrap().push(text);
                                    first = false;
                                } else {
                                    down.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        };
                        tokio::select! {
                            _ = up => {}
                            () = counted => {}
                            _ = broken.wait_for(|b| *b) => {}
                        }
                    } else {
                        // A request is in flight from its first byte to the
                        // first byte of its answer.
                        let bump = |up: bool| {
                            let mut f = in_flight.lock().unwrap();
                            if up {
                                f.0 += 1;
                                f.1 = f.1.max(f.0);
                            } else {
                                f.0 -= 1;
                            }
                        };
                        let mut pending = true;
                        bump(true);
                        let (mut in_read, mut in_write) = inbound.split();
                        let (mut out_read, mut out_write) = outbound.split();
                        let (mut a, mut b) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
                        loop {
                            tokio::select! {
                                r = in_read.read(&mut a) => {
                                    let n = r.unwrap_or(0);
                                    if n == 0 || out_write.write_all(&a[..n]).await.is_err() {
                                        break;
                                    }
                                    if !pending {
                                        pending = true;
                                        bump(true);
                                    }
                                }
                                r = out_read.read(&mut b) => {
                                    let n = r.unwrap_or(0);
                                    if n == 0 || in_write.write_all(&b[..n]).await.is_err() {
                                        break;
                                    }
                                    if pending {
                                        pending = false;
                                        bump(false);
                                    }
                                }
                            }
                        }
                        if pending {
                            bump(false);
                        }
                    }
                });
            }
        });
        Self { addr, heads, upgrade_responses, websocket_bytes_down, http_in_flight, break_ws }
    }

    /// The most HTTP requests that were in flight at once.
    pub fn most_http_in_flight(&self) -> usize {
        self.http_in_flight.lock().unwrap().1
    }

    pub fn break_websockets(&self) {
        self.break_ws.send_replace(true);
    }

    pub fn heads_matching(&self, needle: &str) -> usize {
        let needle = needle.to_ascii_lowercase();
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.to_ascii_lowercase().contains(&needle))
            .count()
    }
}

/// An HTTP proxy that only tunnels (CONNECT), recording each CONNECT line and
/// `Proxy-Authorization` header.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let r = requests.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let requests = r.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(inbound);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    requests.lock().unwrap().push(head.clone());
                    let mut inbound = reader.into_inner();
                    let target = head.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next());
                    let Some(target) = target else {
                        let _ = inbound.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                        return;
                    };
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        let _ = inbound.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = inbound.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { addr, requests }
    }
}
