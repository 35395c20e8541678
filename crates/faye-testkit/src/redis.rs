//! Throwaway `redis-server`s on free loopback ports, for the Redis engine's
//! tests: a plain server, one that also speaks TLS, a replica, a Sentinel, and a
//! three-master Redis Cluster. Never the Redis on 6379: each test starts its
//! own, with no persistence, and it is killed when the handle is dropped.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Behind a lock so that a test sharing the server (`Arc`) can restart it.
    child: Mutex<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    /// Arguments after the port ones, kept for [`RedisServer::restart`].
    args: Vec<String>,
    /// Its working directory: a replica writes the primary's data there
    /// (`dump.rdb`) even without persistence.
    _dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits (up to 10 s) until it answers
    /// `PING`. Panics with a hint if `redis-server` is not installed.
    pub fn start() -> Self {
        Self::start_with(&[], false)
    }

    /// A replica of the server on `port` (127.0.0.1), started as
    /// [`RedisServer::start`] does. It answers `PING` at once; it has the
    /// primary's data once `INFO replication` says `master_link_status:up` (see
    /// [`RedisServer::wait_replicating`]).
    pub fn start_replica_of(port: u16) -> Self {
        Self::start_with(&["--replicaof".into(), "127.0.0.1".into(), port.to_string()], false)
    }

    /// A server that also listens with TLS (`tls_port`; the plain port stays, for
    /// the test's own commands), with this certificate and key (PEM files). Clients
    /// are not asked for a certificate. Panics if this `redis-server` was built
    /// without TLS (see [`tls_supported`]).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let args = [
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_with(&args, true)
    }

    /// A server with these extra arguments (`--name value` pairs), on free ports.
    pub fn start_with(args: &[String], tls: bool) -> Self {
        // The free port is found by binding and releasing it, so another process
        // may take it first: try a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let mut args = args.to_vec();
            args.extend(["--dir".into(), dir.path().display().to_string()]);
            let tls_port = tls.then(free_port);
            if let Some(tls_port) = tls_port {
                args.extend(["--tls-port".into(), tls_port.to_string()]);
            }
            let server = Self {
                child: Mutex::new(spawn(port, &args)),
                port,
                tls_port,
                args,
                _dir: Some(dir),
            };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `rediss://localhost:<tls_port>/` for a server started with
    /// [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}/", self.tls_port.expect("a server started with TLS"))
    }

    /// Waits (up to `limit`) until this replica has synced with its primary.
    pub fn wait_replicating(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.command(&["INFO", "replication"]).iter().any(|l| l == "master_link_status:up") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the replica on port {} did not sync within {limit:?}", self.port);
    }

    /// The replication role the server reports: `master` or `slave`.
    pub fn role(&self) -> String {
        self.command(&["INFO", "replication"])
            .iter()
            .find_map(|l| l.strip_prefix("role:").map(str::to_owned))
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL: no shutdown, as in a crash) and starts a new one
    /// on the same port, empty: the test server keeps nothing on disk. Waits (up
    /// to 10 s) until it answers `PING`.
    pub fn restart(&self) {
        self.kill();
        // The old process's port may linger a moment; redis-server exits at once
        // if it cannot bind, so try again.
        for _ in 0..50 {
            *self.child() = spawn(self.port, &self.args);
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
        command_on(self.port, args).expect("a reply from redis-server")
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

/// Sends one command to 127.0.0.1:`port` and returns the reply as lines: a bulk
/// string's lines, an array's elements (flattened, one level of nesting), or the
/// status or error line.
fn command_on(port: u16, args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    read_reply(&mut reader, &mut out, 0)?;
    Ok(out)
}

fn read_reply(
    reader: &mut BufReader<TcpStream>,
    out: &mut Vec<String>,
    depth: usize,
) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let first = first.trim_end().to_owned();
    if let Some(len) = first.strip_prefix('$') {
        let Ok(len) = len.parse::<usize>() else {
            // `$-1`: nil.
            return Ok(());
        };
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(reader, &mut body)?;
        out.extend(String::from_utf8_lossy(&body[..len]).lines().map(str::to_owned));
    } else if let Some(n) = first.strip_prefix('*') {
        if depth > 2 {
            return Err(bad("nested too deep"));
        }
        let n: i64 = n.parse().map_err(|_| bad("an array length"))?;
        for _ in 0..n.max(0) {
            read_reply(reader, out, depth + 1)?;
        }
    } else {
        out.push(first);
    }
    Ok(())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server must not outlive the test either: SIGKILL works on a
        // stopped process.
        self.kill();
    }
}

fn spawn(port: u16, args: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
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

/// Whether this `redis-server` was built with TLS: one built without refuses the
/// `tls-port` setting. `Err` says why not.
pub fn tls_supported() -> Result<(), String> {
    // With no port at all the server exits at once ("not listening anywhere");
    // a build without TLS exits earlier, on the unknown setting.
    let out = Command::new("redis-server").args(["--port", "0", "--tls-port", "0"]).output();
    match out {
        Err(e) => Err(format!("cannot run redis-server: {e}")),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if text.contains("not supported") || text.contains("Bad directive") {
                Err(format!("redis-server was built without TLS: {}", text.trim()))
            } else {
                Ok(())
            }
        }
    }
}

/// A directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new, empty directory.
    pub fn new(what: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("faye-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running Redis Sentinel (`redis-server sentinel.conf --sentinel`) watching
/// one master, killed on drop. It marks the master down after 1 s without a
/// reply and, being the only sentinel (quorum 1), promotes a replica at once.
#[derive(Debug)]
pub struct Sentinel {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    // Dropped after the process: the sentinel rewrites its config file.
    _dir: TempDir,
}

impl Sentinel {
    /// Starts a sentinel monitoring the master on `master_port` (127.0.0.1) under
    /// the name `master`, and waits (up to 10 s) until it knows the master and
    /// `replicas` replicas of it.
    pub fn start(master: &str, master_port: u16, replicas: usize) -> Self {
        let dir = TempDir::new("sentinel");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.path().display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run redis-server --sentinel");
            let mut child = child;
            match wait_sentinel(&mut child, port, master, replicas, Duration::from_secs(10)) {
                Ok(()) => return Self { child, port, _dir: dir },
                Err(e) => last_error = e,
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis sentinel did not start: {last_error}");
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self, master: &str) -> Option<u16> {
        let reply = command_on(self.port, &["SENTINEL", "get-master-addr-by-name", master]).ok()?;
        reply.get(1)?.parse().ok()
    }
}

fn wait_sentinel(
    child: &mut Child,
    port: u16,
    master: &str,
    replicas: usize,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis sentinel exited: {status}"));
        }
        // `SENTINEL replicas` answers an array of flat arrays; counting the
        // `name` fields counts the replicas.
        if let Ok(lines) = command_on(port, &["SENTINEL", "replicas", master])
            && lines.iter().filter(|l| *l == "name").count() >= replicas
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("the sentinel did not see the master and its replicas in time".into())
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of three masters (no replicas) on free ports, every slot
/// assigned, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The three masters.
    pub nodes: Vec<RedisServer>,
    // Dropped after the servers: it holds their `nodes-PORT.conf` files.
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes`, joins them with
    /// `redis-cli --cluster create`, and waits (up to 20 s) until every node says
    /// `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = TempDir::new("cluster");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The cluster bus listens on the port + 10000: find a port whose
                // bus port is free too.
                for _ in 0..20 {
                    let port = free_port();
                    if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                        continue;
                    }
                    let args: Vec<String> = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &dir.path().join(format!("nodes-{port}.conf")).display().to_string(),
                        "--cluster-node-timeout",
                        "5000",
                        "--dir",
                        &dir.path().display().to_string(),
                    ]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                    let server = RedisServer {
                        child: Mutex::new(spawn(port, &args)),
                        port,
                        tls_port: None,
                        args,
                        _dir: None,
                    };
                    if server.wait_ready(Duration::from_secs(10)).is_ok() {
                        return server;
                    }
                }
                panic!("a cluster node did not start");
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"]).iter().any(|l| l.trim() == "cluster_state:ok")
            });
            if ok {
                return cluster;
            }
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:<port>/` of each node, the seeds for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
