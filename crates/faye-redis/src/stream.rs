//! The bus stream's entries: ids, kinds, and their parsing from Redis replies.

use std::fmt;

use faye_engine::{ClientId, EncodedMessage};
use redis::Value;

/// A Redis stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What one entry of the bus says happened.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A publish: the channel and the message as subscribers receive it.
    Message { channel: String, message: EncodedMessage },
    /// A node created a client (its handshake).
    Handshake { client: ClientId, node: String },
    /// A client subscribed to a channel or pattern (through `node`, if recorded).
    Subscribe { client: ClientId, channel: String, node: Option<String> },
    /// A client left a channel or pattern (through `node`, if recorded).
    Unsubscribe { client: ClientId, channel: String, node: Option<String> },
    /// A node took over a client's queue (a connect landed there).
    Own { client: ClientId, node: String },
    /// A node destroyed a client (disconnect, expiry, overflow); `channels`: what
    /// it was subscribed to.
    Destroyed { client: ClientId, node: String, channels: Vec<String> },
    /// An entry this version does not know (a newer node wrote it): skipped.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: StreamId,
    pub(crate) kind: Kind,
}

/// Field names of bus entries; one letter each, since they are stored per entry.
pub(crate) mod field {
    pub(crate) const KIND: &str = "k";
    pub(crate) const CHANNEL: &str = "c";
    pub(crate) const DATA: &str = "d";
    pub(crate) const CLIENT: &str = "i";
    pub(crate) const NODE: &str = "n";
}

/// Kind tags (the `k` field).
pub(crate) mod tag {
    pub(crate) const MESSAGE: &str = "m";
    pub(crate) const HANDSHAKE: &str = "h";
    pub(crate) const SUBSCRIBE: &str = "s";
    pub(crate) const UNSUBSCRIBE: &str = "u";
    pub(crate) const OWN: &str = "o";
    pub(crate) const DESTROYED: &str = "x";
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    std::str::from_utf8(bytes(v)?).ok()
}

/// Items of an array reply (RESP2 arrays and RESP3 maps alike, flattened).
fn items(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a.iter().collect()),
        Value::Map(m) => Some(m.iter().flat_map(|(k, v)| [k, v]).collect()),
        _ => None,
    }
}

/// One entry, `[id, [field, value, ...]]`. `None` if the reply is malformed.
fn entry(v: &Value) -> Option<Entry> {
    let parts = items(v)?;
    let id = StreamId::parse(text(parts.first()?)?)?;
    let fields = items(parts.get(1)?)?;
    let mut kind = None;
    let (mut channel, mut data, mut client, mut node) = (None, None, None, None);
    for pair in fields.chunks_exact(2) {
        match text(pair[0])? {
            field::KIND => kind = text(pair[1]),
            field::CHANNEL => channel = text(pair[1]),
            field::DATA => data = bytes(pair[1]),
            field::CLIENT => client = text(pair[1]).and_then(ClientId::parse),
            field::NODE => node = text(pair[1]),
            _ => {}
        }
    }
    let kind = match kind? {
        tag::MESSAGE => Kind::Message {
            channel: channel?.to_owned(),
            message: EncodedMessage::from_json(data?),
        },
        tag::HANDSHAKE => Kind::Handshake { client: client?, node: node?.to_owned() },
        tag::SUBSCRIBE => Kind::Subscribe {
            client: client?,
            channel: channel?.to_owned(),
            node: node.map(str::to_owned),
        },
        tag::UNSUBSCRIBE => Kind::Unsubscribe {
            client: client?,
            channel: channel?.to_owned(),
            node: node.map(str::to_owned),
        },
        tag::OWN => Kind::Own { client: client?, node: node?.to_owned() },
        // The channels, one per line (a channel name has no line breaks).
        tag::DESTROYED => Kind::Destroyed {
            client: client?,
            node: node?.to_owned(),
            channels: channel.map(|c| c.lines().map(str::to_owned).collect()).unwrap_or_default(),
        },
        _ => Kind::Unknown,
    };
    Some(Entry { id, kind })
}

/// The entries of an `XRANGE` reply, oldest first.
pub(crate) fn parse_range(v: &Value) -> Result<Vec<Entry>, &'static str> {
    match v {
        Value::Nil => Ok(Vec::new()),
        _ => items(v)
            .ok_or("XRANGE reply is not an array")?
            .into_iter()
            .map(|e| entry(e).ok_or("malformed stream entry"))
            .collect(),
    }
}

/// The entries of an `XREAD` reply for one stream (`Nil` when the block timed out).
pub(crate) fn parse_read(v: &Value) -> Result<Vec<Entry>, &'static str> {
    match v {
        Value::Nil => Ok(Vec::new()),
        _ => {
            let streams = items(v).ok_or("XREAD reply is not an array")?;
            // RESP2: [[name, entries]]; RESP3: {name: entries} flattened to [name, entries].
            let entries = match streams.as_slice() {
                [one] => items(one).and_then(|p| p.get(1).copied()),
                [_, entries] => Some(*entries),
                _ => None,
            };
            parse_range(entries.ok_or("malformed XREAD reply")?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn ids_order_as_redis_orders_them() {
        let a = StreamId::parse("1700000000000-9").unwrap();
        let b = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(StreamId::parse("12"), None);
    }

    #[test]
    fn parses_a_message_entry_and_skips_unknown_kinds() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![
                    bulk("k"),
                    bulk("m"),
                    bulk("c"),
                    bulk("/a"),
                    bulk("d"),
                    bulk(r#"{"channel":"/a","data":1}"#),
                ]),
            ]),
            Value::Array(vec![bulk("6-0"), Value::Array(vec![bulk("k"), bulk("zz")])]),
        ]);
        let entries = parse_range(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        match &entries[0].kind {
            Kind::Message { channel, message } => {
                assert_eq!(channel, "/a");
                assert_eq!(message.json(), br#"{"channel":"/a","data":1}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(entries[1].kind, Kind::Unknown));
    }
}
