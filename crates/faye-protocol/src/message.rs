use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// One Bayeux message: a request, a reply or a published message.
///
/// `data` and unknown top-level fields are kept as raw JSON, so a publish is never
/// re-parsed on its way to subscribers. Fields that Faye reads through JavaScript
/// truthiness (`clientId`, `channel`, `connectionType`, `error`) are `None` when the
/// JSON value is falsy (`null`, `false`, `0`, `""`); other JSON types are turned into
/// strings as JavaScript's `String(value)` would.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// `id`, echoed untouched in replies when truthy.
    pub id: Option<Value>,
    /// `clientId`.
    pub client_id: Option<String>,
    /// `channel`.
    pub channel: Option<String>,
    /// `successful`, set on replies.
    pub successful: Option<bool>,
    /// `error`: a Bayeux error string, or whatever an extension set.
    pub error: Option<String>,
    /// `data`: the publish payload, raw. `Some("null")` is a present `null`.
    pub data: Option<Box<RawValue>>,
    /// `version` (handshake).
    pub version: Option<Value>,
    /// `supportedConnectionTypes` (handshake).
    pub supported_connection_types: Option<Value>,
    /// `connectionType` (connect).
    pub connection_type: Option<String>,
    /// `subscription`: a string or an array of strings (subscribe, unsubscribe).
    pub subscription: Option<Value>,
    /// `advice`.
    pub advice: Option<Value>,
    /// `ext`, for extensions; the core never reads it.
    pub ext: Option<Value>,
    /// Any other top-level field, kept raw and in order.
    pub extra: Vec<(String, Box<RawValue>)>,
}

/// JavaScript truthiness of a JSON value.
pub fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JavaScript's `String(value)` for a JSON value (used where Faye formats errors).
pub fn js_string(v: &Value) -> String {
    let mut out = String::new();
    write_js_string(v, &mut out);
    out
}

/// One buffer for the whole value: joining each level on its own would copy the
/// text of a nested array once per level.
fn write_js_string(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // `String([null])` is "": null and undefined elements print as nothing.
                if !item.is_null() {
                    write_js_string(item, out);
                }
            }
        }
        Value::Object(_) => out.push_str("[object Object]"),
        other => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{other}");
        }
    }
}

fn truthy_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s),
        v if is_truthy(&v) => Some(js_string(&v)),
        _ => None,
    }
}

enum Field {
    Id,
    ClientId,
    Channel,
    Successful,
    Error,
    Data,
    Version,
    SupportedConnectionTypes,
    ConnectionType,
    Subscription,
    Advice,
    Ext,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "id" => Field::Id,
                    "clientId" => Field::ClientId,
                    "channel" => Field::Channel,
                    "successful" => Field::Successful,
                    "error" => Field::Error,
                    "data" => Field::Data,
                    "version" => Field::Version,
                    "supportedConnectionTypes" => Field::SupportedConnectionTypes,
                    "connectionType" => Field::ConnectionType,
                    "subscription" => Field::Subscription,
                    "advice" => Field::Advice,
                    "ext" => Field::Ext,
                    other => Field::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(FieldVisitor)
    }
}

/// Drops every unknown field that is repeated later in the message, so each key
/// keeps its last value, at the place it last appeared. Done once per message, in
/// one pass: removing the earlier entry as each key arrived was quadratic, and one
/// 1 MB body of 80,000 keys took seconds of CPU.
fn keep_last_of_each_key(extra: &mut Vec<(String, Box<RawValue>)>) {
    if extra.len() < 2 {
        return;
    }
    // Walking from the end, the first sighting of a key is its last occurrence.
    // `HashSet`'s default hasher has random keys, so a client cannot choose keys
    // that collide.
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(extra.len());
        extra.iter().rev().map(|(k, _)| seen.insert(k.as_str())).collect()
    };
    if keep.iter().all(|&k| k) {
        return;
    }
    let mut keep = keep.into_iter().rev();
    // `retain` visits every element once, in order.
    extra.retain(|_| keep.next().unwrap_or(true));
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bayeux message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut m = Message::default();
        // A repeated key replaces the earlier value, as in JSON.parse (an unknown
        // key also moves to where it was last seen: see keep_last_of_each_key).
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Id => m.id = Some(map.next_value()?),
                Field::ClientId => m.client_id = truthy_string(map.next_value()?),
                Field::Channel => m.channel = truthy_string(map.next_value()?),
                Field::Successful => m.successful = map.next_value::<Value>()?.as_bool(),
                Field::Error => m.error = truthy_string(map.next_value()?),
                Field::Data => m.data = Some(map.next_value()?),
                Field::Version => m.version = Some(map.next_value()?),
                Field::SupportedConnectionTypes => {
                    m.supported_connection_types = Some(map.next_value()?);
                }
                Field::ConnectionType => m.connection_type = truthy_string(map.next_value()?),
                Field::Subscription => m.subscription = Some(map.next_value()?),
                Field::Advice => m.advice = Some(map.next_value()?),
                Field::Ext => m.ext = Some(map.next_value()?),
                Field::Other(key) => m.extra.push((key, map.next_value()?)),
            }
        }
        keep_last_of_each_key(&mut m.extra);
        Ok(m)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}

/// An element of a request batch. Faye skips falsy elements (no reply) and handles
/// any other non-object as a message with no fields.
pub(crate) struct RequestItem(pub(crate) Option<Message>);

impl<'de> Deserialize<'de> for RequestItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RequestItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bayeux message")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RequestItem, A::Error> {
                MessageVisitor.visit_map(map).map(|m| RequestItem(Some(m)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RequestItem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RequestItem(Some(Message::default())))
            }
            fn visit_unit<E>(self) -> Result<RequestItem, E> {
                Ok(RequestItem(None))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RequestItem, E> {
                Ok(RequestItem(v.then(Message::default)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RequestItem, E> {
                Ok(RequestItem((v != 0).then(Message::default)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RequestItem, E> {
                Ok(RequestItem((v != 0).then(Message::default)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RequestItem, E> {
                Ok(RequestItem((v != 0.0).then(Message::default)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RequestItem, E> {
                Ok(RequestItem((!v.is_empty()).then(Message::default)))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// Serializes a message; as a delivery it leaves out `clientId` (the publisher's
/// credential) and `advice`/`successful` (so a publisher cannot spoof replies).
pub(crate) struct Wire<'a> {
    pub(crate) msg: &'a Message,
    pub(crate) delivery: bool,
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.msg;
        let mut map = s.serialize_map(None)?;
        if let Some(v) = &m.id {
            map.serialize_entry("id", v)?;
        }
        if !self.delivery
            && let Some(v) = &m.client_id
        {
            map.serialize_entry("clientId", v)?;
        }
        if let Some(v) = &m.channel {
            map.serialize_entry("channel", v)?;
        }
        if !self.delivery
            && let Some(v) = &m.successful
        {
            map.serialize_entry("successful", v)?;
        }
        if let Some(v) = &m.error {
            map.serialize_entry("error", v)?;
        }
        if let Some(v) = &m.version {
            map.serialize_entry("version", v)?;
        }
        if let Some(v) = &m.supported_connection_types {
            map.serialize_entry("supportedConnectionTypes", v)?;
        }
        if let Some(v) = &m.connection_type {
            map.serialize_entry("connectionType", v)?;
        }
        if let Some(v) = &m.subscription {
            map.serialize_entry("subscription", v)?;
        }
        if !self.delivery
            && let Some(v) = &m.advice
        {
            map.serialize_entry("advice", v)?;
        }
        if let Some(v) = &m.data {
            map.serialize_entry("data", v)?;
        }
        if let Some(v) = &m.ext {
            map.serialize_entry("ext", v)?;
        }
        for (k, v) in &m.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire { msg: self, delivery: false }.serialize(s)
    }
}

impl Message {
    /// A message on `channel` with nothing else set.
    pub fn on(channel: impl Into<String>) -> Self {
        Self { channel: Some(channel.into()), ..Self::default() }
    }

    /// The message as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A message received on a subscription: what a client hands its subscriber. The
/// same type for the server's in-process client and the network client
/// (`faye-client`), so code that reads deliveries moves between them unchanged.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The channel it was published to (useful with wildcard subscriptions).
    pub channel: String,
    /// The payload, raw JSON as published.
    pub data: Box<RawValue>,
}

impl ReceivedMessage {
    /// The payload deserialized into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}
