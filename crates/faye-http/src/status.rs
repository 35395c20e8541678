//! The live status page ([`ServeOptions::status_page`](crate::ServeOptions::status_page))
//! and the landing page at `/`.
//!
//! The page is a browser app on faye-rs's own client: it subscribes to
//! [`STATUS_CHANNEL`], on which the server publishes a snapshot of its numbers
//! every [`TICK`] while someone is subscribed. The numbers are counted here, from
//! the server's monitoring events and an incoming extension:
//!
//! - clients by the connection type of their last `/meta/connect` seen by this
//!   process (`connecting` before their first);
//! - channels (and patterns) with their subscriber counts;
//! - messages in: publishes accepted (the snapshots themselves excluded);
//! - messages out: for each publish, the subscriptions matching its channel when
//!   it was published, i.e. the deliveries owed, not bytes written.
//!
//! The extension also refuses publishes to [`STATUS_CHANNEL`] from anyone but the
//! server itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faye_engine::Engine;
use faye_protocol::Message;
use faye_server::{BoxFuture, Event, Extension, RequestInfo, Server};
use http::Response;
use http::header::{self, HeaderValue};
use serde_json::json;

use crate::{FayeBody, full};

/// The channel the status snapshots are published on.
pub const STATUS_CHANNEL: &str = "/faye-rs/status";

/// How often a snapshot is published while the status channel has subscribers.
pub const TICK: Duration = Duration::from_millis(500);

/// Channels listed in a snapshot: those with the most subscribers.
const TOP_CHANNELS: usize = 50;

/// The page (`{{MOUNT_JSON}}` and `{{MOUNT_HTML}}` are filled in when served).
const STATUS_HTML: &str = include_str!("../assets/status.html");

/// What the status page counts.
#[derive(Default)]
struct Counts {
    /// Live clients and the connection type of their last connect.
    clients: HashMap<String, &'static str>,
    /// Subscribers by channel or pattern.
    channels: HashMap<String, u64>,
    /// Publishes accepted.
    published: u64,
    /// Deliveries owed to subscribers.
    delivered: u64,
}

/// The status page's counters, fed by a server's monitoring events and an
/// incoming extension.
pub(crate) struct Status {
    counts: Mutex<Counts>,
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection types a client may name (anything else is counted as `other`).
fn transport_name(name: &str) -> &'static str {
    match name {
        "websocket" => "websocket",
        "eventsource" => "eventsource",
        "long-polling" => "long-polling",
        "cross-origin-long-polling" => "cross-origin-long-polling",
        "callback-polling" => "callback-polling",
        "in-process" => "in-process",
        _ => "other",
    }
}

/// The subscription keys a message on `channel` is delivered to: the channel, and
/// the `*` and `**` patterns above it.
fn patterns(channel: &str) -> Vec<String> {
    let mut out = vec![channel.to_owned()];
    let segments: Vec<&str> = channel.split('/').skip(1).collect();
    if let Some((_, parents)) = segments.split_last() {
        let parent: String = parents.iter().map(|s| format!("/{s}")).collect();
        out.push(format!("{parent}/*"));
        for end in (0..=parents.len()).rev() {
            let prefix: String = parents[..end].iter().map(|s| format!("/{s}")).collect();
            out.push(format!("{prefix}/**"));
        }
    }
    out
}

impl Status {
    fn event(&self, event: &Event) {
        let mut c = lock(&self.counts);
        match event {
            Event::Handshake { client_id } => {
                c.clients.insert(client_id.to_string(), "connecting");
            }
            Event::Disconnect { client_id } => {
                c.clients.remove(&client_id.to_string());
            }
            Event::Subscribe { channel, .. } => {
                *c.channels.entry(channel.clone()).or_default() += 1
            }
            Event::Unsubscribe { channel, .. } => {
                if let Some(n) = c.channels.get_mut(channel) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.channels.remove(channel);
                    }
                }
            }
            Event::Publish { channel, .. } if channel != STATUS_CHANNEL => {
                let owed: u64 = patterns(channel).iter().filter_map(|p| c.channels.get(p)).sum();
                c.published += 1;
                c.delivered += owed;
            }
            _ => {}
        }
    }

    fn watched(&self) -> bool {
        lock(&self.counts).channels.contains_key(STATUS_CHANNEL)
    }

    /// The snapshot published on [`STATUS_CHANNEL`].
    fn snapshot(&self) -> serde_json::Value {
        let c = lock(&self.counts);
        let mut clients: HashMap<&str, u64> = HashMap::new();
        for transport in c.clients.values() {
            *clients.entry(transport).or_default() += 1;
        }
        let mut channels: Vec<(&String, &u64)> = c.channels.iter().collect();
        channels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        json!({
            "time": time.as_millis() as u64,
            "clients": clients,
            "clientCount": c.clients.len(),
            "channelCount": c.channels.len(),
            "channels": channels.iter().take(TOP_CHANNELS)
                .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
                .collect::<Vec<_>>(),
            "published": c.published,
            "delivered": c.delivered,
        })
    }
}

/// Records connection types, and refuses others' publishes to the status channel.
struct StatusExtension(Arc<Status>);

impl Extension for StatusExtension {
    fn incoming<'a>(
        &'a self,
        mut message: Message,
        request: Option<&'a RequestInfo>,
    ) -> BoxFuture<'a, Option<Message>> {
        match message.channel.as_deref() {
            Some("/meta/connect") => {
                if let (Some(id), Some(kind)) = (&message.client_id, &message.connection_type) {
                    let mut c = lock(&self.0.counts);
                    if let Some(slot) = c.clients.get_mut(id.as_str()) {
                        *slot = transport_name(kind);
                    }
                }
            }
            Some(STATUS_CHANNEL) if request.is_some() => {
                message.error = Some(format!("403:{STATUS_CHANNEL}:Forbidden"));
            }
            _ => {}
        }
        Box::pin(std::future::ready(Some(message)))
    }
}

/// Starts counting for `server`, and publishing snapshots while someone watches,
/// until the server shuts down.
pub(crate) fn start<E: Engine>(server: &Server<E>) {
    let status = Arc::new(Status { counts: Mutex::default() });
    let events = status.clone();
    server.on_event(move |event| events.event(event));
    server.add_extension(Arc::new(StatusExtension(status.clone())));
    let server = server.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publisher = None;
        while !server.is_shutting_down() {
            every.tick().await;
            if !status.watched() {
                continue;
            }
            if publisher.is_none() {
                publisher = server.client().await.ok();
            }
            if let Some(client) = &publisher
                && client.publish(STATUS_CHANNEL, &status.snapshot()).await.is_err()
            {
                publisher = None;
            }
        }
    });
}

fn html(body: String) -> Response<FayeBody> {
    let mut res = Response::new(full(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// `s` for an HTML attribute or text.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The status page for the endpoint at `mount`.
pub(crate) fn status_page(mount: &str) -> Response<FayeBody> {
    let mount = mount.trim_end_matches('/');
    // A JSON string is a JS string; `<` escaped so that it cannot end the script.
    let mount_json = serde_json::to_string(mount).unwrap_or_default().replace('<', "\\u003c");
    html(
        STATUS_HTML
            .replace("{{MOUNT_JSON}}", &mount_json)
            .replace("{{MOUNT_HTML}}", &escape_html(mount)),
    )
}

/// The landing page at `/`: what this server is and where its parts are.
pub(crate) fn landing_page(mount: &str, status: bool) -> Response<FayeBody> {
    let m = escape_html(mount.trim_end_matches('/'));
    let status = if status {
        "<li><a href=\"/status\">Live status</a>: clients, channels, messages per second</li>"
    } else {
        ""
    };
    html(format!(
        "<!doctype html>\n<html lang=\"en\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>faye-rs</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}\
         code{{background:#f3f4f6;padding:0 .2em}}</style>\n\
         <h1>faye-rs</h1>\n<p>A Bayeux (Faye) pub/sub server. Its endpoint is <code>{m}</code>.</p>\n\
         <ul>{status}<li><a href=\"{m}/client.js\">The browser client</a>: \
         <code>&lt;script src=\"{m}/client.js\"&gt;&lt;/script&gt;</code>, then \
         <code>new Faye.Client(location.origin + '{m}')</code></li>\
         <li><a href=\"/healthz\">/healthz</a> and <a href=\"/readyz\">/readyz</a></li></ul>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_delivered_to_itself_and_the_patterns_above_it() {
        assert_eq!(patterns("/a/b/c"), ["/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**"]);
        assert_eq!(patterns("/a"), ["/a", "/*", "/**"]);
    }

    #[test]
    fn publishes_count_the_matching_subscribers() {
        let status = Status { counts: Mutex::default() };
        let id = faye_protocol::ClientId::from_random_bytes([1; 20]);
        for channel in ["/chat/room", "/chat/*", "/other"] {
            status.event(&Event::Subscribe { client_id: id, channel: channel.into() });
        }
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        let publish = |channel: &str| Event::Publish {
            client_id: None,
            channel: channel.into(),
            data: data.clone(),
        };
        status.event(&publish("/chat/room"));
        status.event(&publish("/nobody"));
        status.event(&publish(STATUS_CHANNEL));
        let snapshot = status.snapshot();
        assert_eq!(snapshot["published"], 2);
        assert_eq!(snapshot["delivered"], 2);
        assert_eq!(snapshot["channelCount"], 3);
        status.event(&Event::Unsubscribe { client_id: id, channel: "/other".into() });
        assert_eq!(status.snapshot()["channelCount"], 2);
    }
}
