//! A throwaway `redis-server` on a free loopback port, for the Redis engine's
//! tests. Never the Redis on 6379: each test starts its own, with no persistence,
//! and it is killed when the handle is dropped.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Behind a lock so that a test sharing the server (`Arc`) can restart it.
    child: Mutex<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits (up to 10 s) until it answers
    /// `PING`. Panics with a hint if `redis-server` is not installed.
    pub fn start() -> Self {
        // The free port is found by binding and releasing it, so another process
        // may take it first: try a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let server = Self { child: Mutex::new(spawn(port)), port };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Kills the server (SIGKILL: no shutdown, as in a crash) and starts a new one
    /// on the same port, empty: the test server keeps nothing on disk. Waits (up
    /// to 10 s) until it answers `PING`.
    pub fn restart(&self) {
        self.kill();
        // The old process's port may linger a moment; redis-server exits at once
        // if it cannot bind, so try again.
        for _ in 0..50 {
            *self.child() = spawn(self.port);
            if self.wait_ready(Duration::from_secs(10)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Kills the server (SIGKILL); [`RedisServer::restart`] starts it again.
    pub fn kill(&self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is
    /// answered, as when Redis is unreachable over the network or stalled.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`RedisServer::pause`]d process (SIGCONT): it answers what it
    /// received meanwhile, in order.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Sends one command (inline form, arguments without spaces) and returns the
    /// reply's lines: enough for `CONFIG RESETSTAT` and `INFO commandstats`.
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set a read timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send to redis-server");
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).expect("read from redis-server");
        let first = first.trim_end().to_owned();
        match first.strip_prefix('$') {
            Some(len) => {
                let len: usize = len.parse().expect("a bulk length");
                let mut body = vec![0; len + 2];
                std::io::Read::read_exact(&mut reader, &mut body).expect("read a bulk reply");
                String::from_utf8_lossy(&body[..len]).lines().map(str::to_owned).collect()
            }
            None => vec![first],
        }
    }

    /// Calls per command since the last `CONFIG RESETSTAT`, from `INFO
    /// commandstats`: `[("xadd", 3), ...]`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        self.command(&["INFO", "commandstats"])
            .iter()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child().try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = String::new();
                if stream.write_all(b"PING\r\n").is_ok()
                    && BufReader::new(stream).read_line(&mut reply).is_ok()
                    && reply.starts_with("+PONG")
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child().kill();
        Err("no PONG within the time limit".into())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server must not outlive the test either: SIGKILL works on a
        // stopped process.
        self.kill();
    }
}

fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run redis-server ({e}); install it (Debian: apt-get install redis-server)"
            )
        })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a local address").port()
}
