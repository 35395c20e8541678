//! `faye subscribe` and `faye publish`: the Rust client from the shell.
//!
//! Exit codes: 0 done; 1 bad input (JSON, a header, a certificate file); 2 bad
//! usage; 3 timed out; 4 refused by the server (a channel, a handshake, an
//! extension); 5 disconnected otherwise.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use faye_client::{Client, ConnectionState, Error, Subscription, TransportKind};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use serde_json::value::RawValue;
use tokio::io::AsyncBufReadExt as _;

/// Exit codes.
const BAD_INPUT: u8 = 1;
const TIMED_OUT: u8 = 3;
const REFUSED: u8 = 4;
const DISCONNECTED: u8 = 5;

/// How `publish` and `subscribe` reach the server.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// A header for every request and the WebSocket upgrade, as 'Name: value'
    /// (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Trust the certificate authorities in this PEM file too (for a server with
    /// a private or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// An HTTP proxy, http://host:port or http://user:password@host:port (tunnels
    /// with CONNECT).
    /// Without it, HTTPS_PROXY, HTTP_PROXY and NO_PROXY apply.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Use only this transport (default: WebSocket, falling back to long-polling).
    #[arg(long, value_enum)]
    transport: Option<Transport>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Websocket,
    LongPolling,
}

/// `faye subscribe`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    /// The server's Bayeux endpoint, e.g. http://127.0.0.1:8000/bayeux.
    url: String,
    /// Channels or patterns (/chat/*, /chat/**).
    #[arg(required = true)]
    channels: Vec<String>,
    /// Exit (0) after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit after this many seconds: 0 without --count, 3 if fewer than --count
    /// messages came.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    #[command(flatten)]
    connection: Connection,
}

/// `faye publish`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// The server's Bayeux endpoint, e.g. http://127.0.0.1:8000/bayeux.
    url: String,
    /// The channel to publish to.
    channel: String,
    /// The message's data, as JSON. Without it, each line of standard input is
    /// one message (blank lines are skipped).
    json: Option<String>,
    /// Give up (exit 3) when the server has acknowledged nothing for this many
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    connection: Connection,
}

/// A failure, and the exit code it gives.
struct Failure(u8, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Rejected(_) | Error::NoReply => REFUSED,
            Error::Data(_) | Error::Url(_) => BAD_INPUT,
            Error::Timeout => TIMED_OUT,
            _ => DISCONNECTED,
        };
        Self(code, e.to_string())
    }
}

fn seconds(s: f64, what: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Failure(BAD_INPUT, format!("--{what} must be a positive number of seconds")))
}

impl Connection {
    fn client(&self, url: &str) -> Result<Client, Failure> {
        let bad = |e: Error| Failure(BAD_INPUT, e.to_string());
        let mut builder = Client::builder(url);
        for header in &self.headers {
            let Some((name, value)) = header.split_once(':') else {
                return Err(Failure(
                    BAD_INPUT,
                    format!("--header {header:?}: expected 'Name: value'"),
                ));
            };
            builder = builder.header(name.trim(), value.trim()).map_err(bad)?;
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| Failure(BAD_INPUT, format!("--ca-cert {}: {e}", path.display())))?;
            builder = builder.ca_certs_pem(&pem).map_err(bad)?;
        }
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(proxy).map_err(bad)?;
        }
        match self.transport {
            Some(Transport::Websocket) => builder = builder.disable(TransportKind::LongPolling),
            Some(Transport::LongPolling) => builder = builder.disable(TransportKind::WebSocket),
            None => {}
        }
        let client = builder.build().map_err(bad)?;
        // Connection trouble goes to stderr as it happens.
        let mut states = client.state_changes();
        tokio::spawn(async move {
            while states.changed().await.is_ok() {
                let state = states.borrow_and_update().clone();
                if let ConnectionState::Reconnecting(reason) = state {
                    eprintln!("faye: reconnecting: {reason}");
                }
            }
        });
        Ok(client)
    }
}

/// Why the client is not connected, for a timeout's message.
fn why(client: &Client) -> String {
    match client.state() {
        ConnectionState::Reconnecting(reason) | ConnectionState::Disconnected(reason) => {
            format!(" (last: {reason})")
        }
        _ => String::new(),
    }
}

fn exit(result: Result<(), Failure>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(Failure(code, message)) => {
            eprintln!("faye: {message}");
            code
        }
    }
}

pub(crate) async fn subscribe(args: SubscribeArgs) -> u8 {
    let result = async {
        let deadline = args.timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let client = args.connection.client(&args.url)?;
        let run = run_subscribe(&client, &args);
        match deadline {
            None => run.await,
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(result) => result,
                Err(_) if args.count.is_none() => Ok(()),
                Err(_) => Err(Failure(
                    TIMED_OUT,
                    format!(
                        "timed out before {} messages{}",
                        args.count.unwrap_or(0),
                        why(&client)
                    ),
                )),
            },
        }
    };
    exit(result.await)
}

async fn run_subscribe(client: &Client, args: &SubscribeArgs) -> Result<(), Failure> {
    let mut subscriptions: Vec<Subscription> = Vec::new();
    for channel in &args.channels {
        subscriptions.push(client.subscribe(channel).await?);
    }
    eprintln!("faye: subscribed to {}", args.channels.join(" "));
    let mut messages = futures_util::stream::select_all(subscriptions);
    let mut left = args.count;
    let mut out = String::new();
    while left != Some(0) {
        let Some(first) = messages.next().await else {
            return Err(Failure(DISCONNECTED, format!("the subscription ended{}", why(client))));
        };
        // Everything already here goes out in one write.
        let mut next = Some(first);
        while let Some(m) = next.take() {
            line(&mut out, &m.channel, &m.data);
            left = left.map(|n| n - 1);
            if left == Some(0) {
                break;
            }
            next = messages.next().now_or_never().flatten();
        }
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
            // The reader went away (`| head`): done.
            return Ok(());
        }
        out.clear();
    }
    let _ = client.disconnect().await;
    Ok(())
}

/// One message as one JSON line, `data` as published unless it spans lines.
fn line(out: &mut String, channel: &str, data: &RawValue) {
    let channel = serde_json::to_string(channel).unwrap_or_default();
    let raw = data.get();
    out.push_str("{\"channel\":");
    out.push_str(&channel);
    out.push_str(",\"data\":");
    if raw.contains(['\n', '\r']) {
        let compact = serde_json::from_str::<serde_json::Value>(raw).map(|v| v.to_string());
        out.push_str(&compact.unwrap_or_else(|_| "null".into()));
    } else {
        out.push_str(raw);
    }
    out.push_str("}\n");
}

/// Publishes not yet acknowledged at once, at most.
const WINDOW: usize = 1000;

pub(crate) async fn publish(args: PublishArgs) -> u8 {
    exit(run_publish(args).await)
}

async fn run_publish(args: PublishArgs) -> Result<(), Failure> {
    let patience = seconds(args.timeout, "timeout")?;
    let parse = |text: &str, what: &str| {
        serde_json::from_str::<Box<RawValue>>(text)
            .map_err(|e| Failure(BAD_INPUT, format!("{what} is not JSON: {e}")))
    };
    let client = args.connection.client(&args.url)?;
    let mut pending = VecDeque::new();
    let settle = |pending: &mut VecDeque<_>| {
        let front = pending.pop_front();
        let client = &client;
        async move {
            let Some(front) = front else { return Ok(()) };
            match tokio::time::timeout(patience, front).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Failure::from(e)),
                Err(_) => Err(Failure(
                    TIMED_OUT,
                    format!("no acknowledgement within {patience:?}{}", why(client)),
                )),
            }
        }
    };
    if let Some(json) = &args.json {
        let data = parse(json, "the message")?;
        pending.push_back(client.publish(&args.channel, &data));
    } else {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut number = 0u64;
        while let Some(text) = lines
            .next_line()
            .await
            .map_err(|e| Failure(BAD_INPUT, format!("standard input: {e}")))?
        {
            number += 1;
            if text.trim().is_empty() {
                continue;
            }
            let data = parse(&text, &format!("line {number}"))?;
            pending.push_back(client.publish(&args.channel, &data));
            if pending.len() >= WINDOW {
                settle(&mut pending).await?;
            }
        }
    }
    while !pending.is_empty() {
        settle(&mut pending).await?;
    }
    let _ = client.disconnect().await;
    Ok(())
}
