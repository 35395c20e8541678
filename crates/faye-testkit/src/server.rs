//! Servers on free ports: a [`FayeService`] in this process, or the `faye`
//! binary as a child process.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use faye_engine::Engine;
use faye_http::FayeService;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};

use crate::within;

/// A listener on a free loopback port, and its address: for apps (axum, hyper)
/// that serve themselves.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    (listener, addr)
}

/// Serves `faye` on a free loopback port until the test's runtime ends; returns
/// the address.
pub async fn serve<E: Engine>(faye: FayeService<E>) -> SocketAddr {
    serve_until(faye, std::future::pending()).await
}

/// As [`serve`], stopping (gracefully) when `shutdown` completes.
pub async fn serve_until<E: Engine>(
    faye: FayeService<E>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(faye_http::serve(listener, faye, shutdown));
    addr
}

/// `bin serve --host 127.0.0.1 --port 0 ARGS…`, ready to spawn: stdout piped
/// (the server prints where it listens there), stderr discarded unless
/// `FAYE_TEST_LOG` is set, killed when dropped. For tests that drive the process
/// themselves (signals, other first lines); [`FayeProcess`] does the rest.
pub fn serve_command(bin: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("FAYE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    cmd
}

/// A `faye serve` child process on a free port, killed when dropped.
///
/// Its stderr is discarded unless `FAYE_TEST_LOG` is set in the environment.
#[derive(Debug)]
pub struct FayeProcess {
    child: Child,
    /// Held so that the child never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// The first line the server printed: `faye-rs listening on <url>`.
    pub listening: String,
    /// The port it listens on.
    pub port: u16,
}

impl FayeProcess {
    /// Runs `bin serve --host 127.0.0.1 --port 0 ARGS…` and waits (up to 20 s)
    /// for the line saying where it listens.
    pub async fn serve(bin: impl AsRef<OsStr>, args: &[&str]) -> Self {
        let mut child = serve_command(bin, args).spawn().expect("spawn the faye binary");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        within(Duration::from_secs(20), "the listening line", async {
            stdout.read_line(&mut line).await.expect("read stdout");
        })
        .await;
        let listening = line.trim_end().to_owned();
        let port = listening
            .strip_prefix("faye-rs listening on http://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first stdout line: {listening:?}"));
        Self { child, _stdout: stdout, listening, port }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's resident memory, in KiB (`VmRSS` in `/proc/PID/status`), where
    /// the system reports it.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Kills the child now (it is also killed on drop).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
