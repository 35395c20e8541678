//! `faye serve`'s settings, layered: defaults < config file (`--config FILE`) <
//! `FAYE_*` environment variables < command-line flags.
//!
//! clap merges the last two (a flag wins over its variable); this module gives
//! the defaults, reads the file and applies clap's values over it. Every key of
//! the file names one flag: `max_queue` in `[limits]` is `--max-queue` and
//! `FAYE_MAX_QUEUE`; `faye config` prints them all with the defaults.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// Where clients, subscriptions and queues live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineKind {
    /// One process (Faye's default).
    Memory,
    /// Several processes on one Redis.
    Redis,
}

/// How the Redis engine lays out its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RedisLayout {
    /// faye-rs's own: a stream of publishes, lossless when clients move.
    Native,
    /// Node Faye's faye-redis 0.2.0 keys, to run beside Node Faye servers.
    FayeRedis,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A value of the file, read as the type of its setting.
trait FromToml: Sized {
    /// What the key takes, for error messages.
    const EXPECTED: &'static str;
    fn from_toml(value: &toml::Value) -> Option<Self>;
    /// The value as TOML, for `faye config`.
    fn to_toml(&self) -> Option<String>;
}

impl FromToml for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml::Value::String(self.clone()).to_string())
    }
}

impl FromToml for PathBuf {
    const EXPECTED: &'static str = "a file name (string)";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(Self::from)
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml::Value::String(self.display().to_string()).to_string())
    }
}

impl FromToml for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_bool()
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl FromToml for f64 {
    const EXPECTED: &'static str = "a number of seconds";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        match value {
            toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => Some(*f),
            toml::Value::Integer(i) if *i >= 0 => Some(*i as Self),
            _ => None,
        }
    }
    fn to_toml(&self) -> Option<String> {
        // Always with a fraction, so that it reads back as a float.
        Some(format!("{self:?}"))
    }
}

macro_rules! integer {
    ($($t:ty => $expected:literal),*) => {$(
        impl FromToml for $t {
            const EXPECTED: &'static str = $expected;
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_integer().and_then(|i| <$t>::try_from(i).ok())
            }
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integer!(
    u16 => "an integer from 0 to 65535",
    u32 => "an integer from 0 to 4294967295",
    u64 => "a non-negative integer",
    usize => "a non-negative integer"
);

impl FromToml for Vec<String> {
    const EXPECTED: &'static str = "a list of strings";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        match value {
            toml::Value::Array(items) => {
                items.iter().map(|i| i.as_str().map(str::to_owned)).collect()
            }
            // One string is a list of one (or, as on the command line, of several
            // comma-separated).
            toml::Value::String(s) => Some(vec![s.clone()]),
            _ => None,
        }
    }
    fn to_toml(&self) -> Option<String> {
        let items = self.iter().map(|s| toml::Value::String(s.clone())).collect();
        Some(toml::Value::Array(items).to_string())
    }
}

impl<T: FromToml> FromToml for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_toml(value: &toml::Value) -> Option<Self> {
        T::from_toml(value).map(Some)
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(T::to_toml)
    }
}

macro_rules! enum_value {
    ($t:ty, $expected:literal) => {
        impl FromToml for $t {
            const EXPECTED: &'static str = $expected;
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_str().and_then(|s| <$t as ValueEnum>::from_str(s, false).ok())
            }
            fn to_toml(&self) -> Option<String> {
                let name = self.to_possible_value()?.get_name().to_owned();
                Some(toml::Value::String(name).to_string())
            }
        }
    };
}
enum_value!(EngineKind, "\"memory\" or \"redis\"");
enum_value!(LogFormat, "\"text\" or \"json\"");
enum_value!(RedisLayout, "\"native\" or \"faye-redis\"");

/// Declares the settings once: the struct, its defaults, the file's keys (in
/// `faye config`'s order, top-level keys first) and their documentation.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        [$section:literal] $field:ident: $ty:ty = $default:expr, example $example:literal;
    )*) => {
        /// Every setting of `faye serve`, resolved.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct Settings {
            $(pub(crate) $field: $ty,)*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        /// The file's keys, as `section.key` (or `key` at the top level).
        pub(crate) const KEYS: &[&str] = &[$(
            if $section.is_empty() { stringify!($field) } else { concat!($section, ".", stringify!($field)) },
        )*];

        impl Settings {
            /// Sets the setting named by the dotted `key` from a file's `value`.
            fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), SetError> {
                $(
                    let name = if $section.is_empty() { stringify!($field) } else { concat!($section, ".", stringify!($field)) };
                    if key == name {
                        return match <$ty as FromToml>::from_toml(value) {
                            Some(v) => { self.$field = v; Ok(()) }
                            None => Err(SetError::Bad(<$ty as FromToml>::EXPECTED)),
                        };
                    }
                )*
                Err(SetError::Unknown)
            }

            /// These settings as a commented TOML file.
            pub(crate) fn to_commented_toml(&self) -> String {
                let mut out = String::from(HEADER);
                let mut section = "";
                $(
                    if $section != section {
                        section = $section;
                        let _ = write!(out, "\n[{section}]\n");
                    }
                    out.push('\n');
                    for line in [$($doc),+] {
                        let _ = writeln!(out, "#{line}");
                    }
                    match <$ty as FromToml>::to_toml(&self.$field) {
                        Some(v) => { let _ = writeln!(out, "{} = {v}", stringify!($field)); }
                        None => { let _ = writeln!(out, "# {} = {}", stringify!($field), $example); }
                    }
                )*
                let _ = section;
                out
            }
        }
    };
}

const HEADER: &str = "\
# faye serve's settings: `faye serve --config faye.toml`.
# Each key is also a flag and an environment variable: `max_queue` in [limits]
# is --max-queue and FAYE_MAX_QUEUE. Flags win over the environment, which wins
# over this file, which wins over the defaults written here.
";

settings! {
    /// Address to listen on; 0.0.0.0 accepts connections from other machines.
    [""] host: String = "127.0.0.1".into(), example "";
    /// Port to listen on; 0 lets the system choose (the chosen one is printed).
    [""] port: u16 = 8000, example "";
    /// Path the Bayeux endpoint is served under.
    [""] mount: String = "/bayeux".into(), example "";
    /// Seconds a /meta/connect is held open; clients expire after twice this.
    [""] timeout: f64 = 60.0, example "";
    /// Seconds between WebSocket pings (none by default).
    [""] ping: Option<f64> = None, example "25.0";
    /// Another browser client to serve at MOUNT/client.js and MOUNT.js instead of
    /// faye-rs's own (served by default), e.g. npm faye's client/faye-browser-min.js.
    [""] client_js: Option<PathBuf> = None, example "\"faye-browser-min.js\"";
    /// Serve a live status page at /status: clients by connection type, channels
    /// and subscriber counts, messages per second. Anyone who can reach the
    /// server can see it.
    [""] status_page: bool = false, example "";
    /// Origins whose pages may use the server (default: any, as Faye): others
    /// get no CORS headers, and 403 for WebSocket, EventSource and JSON-P.
    [""] allowed_origins: Option<Vec<String>> = None, example "[\"https://app.example.com\"]";
    /// Also speak cleartext HTTP/2 (h2c); with TLS, HTTP/2 is offered by ALPN anyway.
    [""] http2: bool = false, example "";
    /// Negotiate WebSocket permessage-deflate compression with clients that offer it.
    [""] websocket_deflate: bool = false, example "";
    /// Largest request body or WebSocket message, in bytes.
    [""] max_request_bytes: usize = 1 << 20, example "";
    /// Most messages in one request.
    [""] max_batch: usize = 1000, example "";
    /// Seconds a write may wait for a peer that reads nothing; then the
    /// connection is closed.
    [""] write_timeout: f64 = 30.0, example "";
    /// Seconds a client's message may wait for one it sent earlier that has not
    /// arrived yet; 0 applies messages as they arrive.
    [""] order_wait: f64 = 0.5, example "";
    /// Where clients, subscriptions and queues live: "memory" (this process) or
    /// "redis" (shared by several faye serve processes acting as one service).
    [""] engine: EngineKind = EngineKind::Memory, example "";
    /// Seconds a graceful stop (SIGTERM, Ctrl-C) may take: held connects are
    /// answered at once, then in-flight requests get this long; a second signal
    /// stops at once.
    [""] drain_timeout: f64 = 10.0, example "";
    /// Most channels one client may subscribe to.
    ["limits"] max_subscriptions: usize = 1000, example "";
    /// Most messages queued for one client; a client too slow to drain its queue
    /// is disconnected.
    ["limits"] max_queue: usize = 100_000, example "";
    /// Most bytes of messages queued for one client; past it, as past max_queue.
    ["limits"] max_queue_bytes: usize = 16 << 20, example "";
    /// Most live clients (sessions); past it handshakes are refused with
    /// 503::Too many clients.
    ["limits"] max_clients: usize = 100_000, example "";
    /// Most clients one request or WebSocket frame may create.
    ["limits"] max_handshakes_per_request: usize = 1, example "";
    /// Most publishes per second per client (default: no limit).
    ["limits"] max_publishes_per_second: Option<u32> = None, example "100";
    /// Most bytes of published messages per second per client (default: no limit).
    ["limits"] max_publish_bytes_per_second: Option<u64> = None, example "1048576";
    /// The Redis of the "redis" engine: redis://[user:password@]host:port/db,
    /// rediss://... for TLS, redis+sentinel://host:port,host:port/MASTER/db; with
    /// cluster set, the cluster's seed nodes.
    ["redis"] url: Vec<String> = Vec::new(), example "";
    /// url names seed nodes of a Redis Cluster.
    ["redis"] cluster: bool = false, example "";
    /// A CA certificate (PEM) to check the Redis server's TLS certificate against.
    ["redis"] ca_cert: Option<PathBuf> = None, example "\"/etc/faye/redis-ca.pem\"";
    /// Prefix of the engine's Redis keys; every node of one service uses the same.
    /// Default "faye"; with layout "faye-redis", empty (faye-redis's default).
    ["redis"] namespace: Option<String> = None, example "\"faye\"";
    /// "native", or "faye-redis": Node Faye's faye-redis 0.2.0 keys, so that
    /// faye serve nodes and Node Faye servers share one Redis (a rolling migration).
    ["redis"] layout: RedisLayout = RedisLayout::Native, example "";
    /// Certificate chain (PEM) for TLS termination; with key, the server speaks
    /// HTTPS (HTTP/1.1 and HTTP/2 by ALPN). Reloaded on SIGHUP or when it changes.
    ["tls"] cert: Option<PathBuf> = None, example "\"/etc/faye/cert.pem\"";
    /// The certificate's private key (PEM).
    ["tls"] key: Option<PathBuf> = None, example "\"/etc/faye/key.pem\"";
    /// HOST:PORT of a second listener serving /metrics (Prometheus' text
    /// format), /healthz and /readyz; off by default.
    ["metrics"] addr: Option<String> = None, example "\"127.0.0.1:9090\"";
    /// "text" or "json" (one object per line). RUST_LOG filters (default info).
    ["log"] format: LogFormat = LogFormat::Text, example "";
}

enum SetError {
    Unknown,
    Bad(&'static str),
}

/// A config file that could not be used; the message names the file, the key and
/// the value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Flattens `table` into dotted keys.
fn flatten<'a>(prefix: &str, table: &'a toml::Table, out: &mut Vec<(String, &'a toml::Value)>) {
    for (key, value) in table {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, out),
            other => out.push((name, other)),
        }
    }
}

impl Settings {
    /// Applies a config file's text over these settings; `origin` (the file's
    /// name) is what error messages say it came from.
    pub(crate) fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let detail = e.message().trim_end();
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_default();
            ConfigError(format!("{origin}{at}: not a TOML file: {detail}"))
        })?;
        let mut values = Vec::new();
        flatten("", &table, &mut values);
        for (key, value) in values {
            match self.set(&key, value) {
                Ok(()) => {}
                Err(SetError::Unknown) => {
                    let hint = match closest(&key) {
                        Some(k) => format!(" (did you mean `{k}`?)"),
                        None => String::new(),
                    };
                    return Err(ConfigError(format!(
                        "{origin}: unknown key `{key}` (= {value}){hint}; `faye config` lists every key"
                    )));
                }
                Err(SetError::Bad(expected)) => {
                    return Err(ConfigError(format!(
                        "{origin}: bad value for `{key}`: {value} is not {expected}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads and applies the config file at `path`.
    pub(crate) fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{origin}: cannot read the config file: {e}")))?;
        self.apply_toml(&text, &origin)
    }
}

/// ":line:column" of a byte offset (1-based).
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{col}")
}

/// The known key closest to `key`, if one is close (a typo, or the right name in
/// the wrong section).
fn closest(key: &str) -> Option<&'static str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    if let Some(k) = KEYS.iter().find(|k| k.rsplit('.').next() == Some(last)) {
        return Some(k);
    }
    KEYS.iter().map(|k| (distance(k, key), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/faye/faye.toml";

    fn apply(text: &str) -> Result<Settings, String> {
        let mut s = Settings::default();
        s.apply_toml(text, FILE).map_err(|e| e.0)?;
        Ok(s)
    }

    /// A key's line in `faye config`'s output, set or commented out.
    fn example_line(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("# ")?;
        let name = rest.split(" = ").next()?;
        KEYS.iter().any(|k| k.rsplit('.').next() == Some(name)).then_some(rest)
    }

    #[test]
    fn the_printed_defaults_parse_back_to_the_defaults() {
        let printed = Settings::default().to_commented_toml();
        assert_eq!(apply(&printed).unwrap(), Settings::default());
        for key in KEYS {
            let name = key.rsplit('.').next().unwrap();
            let set = format!("{name} = ");
            let commented = format!("# {name} = ");
            assert!(
                printed.lines().any(|l| l.starts_with(&set) || l.starts_with(&commented)),
                "{key} missing from:\n{printed}"
            );
        }
    }

    #[test]
    fn the_commented_examples_are_valid_too() {
        let printed = Settings::default().to_commented_toml();
        let uncommented: String =
            printed.lines().map(|l| example_line(l).unwrap_or(l).to_owned() + "\n").collect();
        let all = apply(&uncommented).unwrap();
        assert_eq!(all.ping, Some(25.0));
        assert_eq!(all.cert, Some(PathBuf::from("/etc/faye/cert.pem")));
        assert_eq!(all.addr.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(all.max_publishes_per_second, Some(100));
        assert_eq!(all.allowed_origins, Some(vec!["https://app.example.com".to_owned()]));
    }

    #[test]
    fn a_file_sets_what_it_names_and_leaves_the_rest() {
        let s = apply(
            r#"
port = 9000
timeout = 30
engine = "redis"
log = { format = "json" }

[limits]
max_queue = 10

[redis]
url = "redis://127.0.0.1:6379/0"

[tls]
cert = "c.pem"
key = "k.pem"
"#,
        )
        .unwrap();
        let want = Settings {
            port: 9000,
            timeout: 30.0,
            engine: EngineKind::Redis,
            format: LogFormat::Json,
            max_queue: 10,
            url: vec!["redis://127.0.0.1:6379/0".into()],
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..Settings::default()
        };
        assert_eq!(s, want);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_value_and_file() {
        assert_eq!(
            apply("prot = 8001").unwrap_err(),
            "/etc/faye/faye.toml: unknown key `prot` (= 8001) (did you mean `port`?); \
             `faye config` lists every key"
        );
        assert_eq!(
            apply("max_queue = 5").unwrap_err(),
            "/etc/faye/faye.toml: unknown key `max_queue` (= 5) (did you mean `limits.max_queue`?); \
             `faye config` lists every key"
        );
        assert_eq!(
            apply("[tls]\ncertificate = \"a.pem\"").unwrap_err(),
            "/etc/faye/faye.toml: unknown key `tls.certificate` (= \"a.pem\"); \
             `faye config` lists every key"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_key_and_file() {
        let cases = [
            ("port = 70000", "bad value for `port`: 70000 is not an integer from 0 to 65535"),
            ("port = \"80\"", "bad value for `port`: \"80\" is not an integer from 0 to 65535"),
            ("timeout = -1", "bad value for `timeout`: -1 is not a number of seconds"),
            ("http2 = \"yes\"", "bad value for `http2`: \"yes\" is not true or false"),
            (
                "engine = \"mysql\"",
                "bad value for `engine`: \"mysql\" is not \"memory\" or \"redis\"",
            ),
            (
                "[log]\nformat = \"xml\"",
                "bad value for `log.format`: \"xml\" is not \"text\" or \"json\"",
            ),
            (
                "[limits]\nmax_clients = 1.5",
                "bad value for `limits.max_clients`: 1.5 is not a non-negative integer",
            ),
            (
                "allowed_origins = [1, 2]",
                "bad value for `allowed_origins`: [1, 2] is not a list of strings",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(apply(text).unwrap_err(), format!("{FILE}: {message}"), "{text}");
        }
    }

    #[test]
    fn a_file_that_is_not_toml_says_where() {
        assert_eq!(
            apply("port = 8000\nhost = \n").unwrap_err(),
            "/etc/faye/faye.toml:2:8: not a TOML file: string values must be quoted, expected literal string"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Settings::default().apply_file(Path::new("/nonexistent/faye.toml")).unwrap_err();
        assert!(
            err.0.starts_with("/nonexistent/faye.toml: cannot read the config file: "),
            "{err}"
        );
    }
}
