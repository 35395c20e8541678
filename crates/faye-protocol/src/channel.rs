//! Channel names and patterns: Faye's grammar, kinds and `expand`.
//!
//! A segment is one or more of `A-Z a-z 0-9 - _ ! ~ ( ) $ @`. A name is `/seg(/seg)*`;
//! a pattern is a name prefix followed by a final `/*` or `/**`.
//!
//! [`Channel`] is a name or pattern that passed the grammar: the server parses a
//! message's channel once and hands the parsed value on (to the engine, to
//! routing), so nothing downstream checks or splits it again.

use std::fmt;

use smol_str::SmolStr;

/// Whether `c` may appear in a channel segment.
fn is_segment_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'!' | b'~' | b'(' | b')' | b'$' | b'@')
}

/// What a valid channel string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// A concrete channel, e.g. `/chat/room`: the only kind that can be published to.
    Name,
    /// Ends in `/*`: every channel one segment below the prefix.
    OneLevel,
    /// Ends in `/**`: every channel any number of segments below the prefix.
    AnyLevels,
}

/// A valid channel name or pattern, parsed once.
///
/// ```
/// use faye_protocol::channel::{Channel, ChannelKind};
/// let channel = Channel::parse("/chat/room").unwrap();
/// assert_eq!((channel.kind(), channel.segments()), (ChannelKind::Name, 2));
/// assert_eq!(Channel::parse("/chat/**").unwrap().kind(), ChannelKind::AnyLevels);
/// assert!(Channel::parse("/chat/").is_none() && Channel::parse("/a/*/b").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Channel {
    name: SmolStr,
    kind: ChannelKind,
    segments: usize,
}

impl Channel {
    /// Parses `name` against Faye's grammar: `None` unless it is a valid name or
    /// pattern. Linear in the length of `name`.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, segments) = classify(name)?;
        Some(Self { name: SmolStr::new(name), kind, segments })
    }

    /// The channel as sent.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Name or which kind of pattern.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// A concrete channel (no wildcard).
    pub fn is_name(&self) -> bool {
        self.kind == ChannelKind::Name
    }

    /// How many `/`-separated segments it has, a final wildcard included.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// The first segment is exactly `meta`.
    pub fn is_meta(&self) -> bool {
        self.first_segment() == "meta"
    }

    /// The first segment is exactly `service`.
    pub fn is_service(&self) -> bool {
        self.first_segment() == "service"
    }

    /// What a remote client may subscribe to: neither meta nor service.
    pub fn is_subscribable(&self) -> bool {
        !self.is_meta() && !self.is_service()
    }

    fn first_segment(&self) -> &str {
        self.name[1..].split('/').next().unwrap_or("")
    }

    /// Every subscription key a publish to this channel must reach, in Faye's
    /// order: `/**`, the name, the name with its last segment replaced by `*`, then
    /// each proper prefix followed by `/**`. A name of n segments gives n + 2 keys.
    /// All keys share one buffer: one allocation, whatever n is.
    ///
    /// ```
    /// use faye_protocol::channel::Channel;
    /// let keys = Channel::parse("/foo/bar/qux").unwrap().expand();
    /// assert_eq!(
    ///     keys.iter().collect::<Vec<_>>(),
    ///     ["/**", "/foo/bar/qux", "/foo/bar/*", "/foo/**", "/foo/bar/**"]
    /// );
    /// ```
    pub fn expand(&self) -> Expansion {
        Expansion::of(&self.name)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The kind and segment count of a valid name or pattern, in one pass.
fn classify(name: &str) -> Option<(ChannelKind, usize)> {
    let rest = name.strip_prefix('/')?;
    let mut segments = 0;
    let mut kind = ChannelKind::Name;
    for seg in rest.split('/') {
        // A wildcard was not the last segment.
        if kind != ChannelKind::Name {
            return None;
        }
        segments += 1;
        match seg {
            "*" => kind = ChannelKind::OneLevel,
            "**" => kind = ChannelKind::AnyLevels,
            _ if !seg.is_empty() && seg.bytes().all(is_segment_byte) => {}
            _ => return None,
        }
    }
    Some((kind, segments))
}

/// The subscription keys of one channel (see [`Channel::expand`]), stored one after
/// the other in a single string.
#[derive(Clone)]
pub struct Expansion {
    /// `/**`, the name, the parent's `/*`, then each proper prefix's `/**`.
    keys: String,
    name_len: usize,
}

impl Expansion {
    fn of(name: &str) -> Self {
        // Byte offsets of every '/' but the leading one: the ends of the proper prefixes.
        let cuts = || name.bytes().enumerate().skip(1).filter(|&(_, b)| b == b'/').map(|(i, _)| i);
        let parent = cuts().next_back().unwrap_or(0);
        let len = 3 + name.len() + parent + 2 + cuts().map(|cut| cut + 3).sum::<usize>();
        let mut keys = String::with_capacity(len);
        keys.push_str("/**");
        keys.push_str(name);
        keys.push_str(&name[..parent]);
        keys.push_str("/*");
        for cut in cuts() {
            keys.push_str(&name[..cut]);
            keys.push_str("/**");
        }
        Self { keys, name_len: name.len() }
    }

    /// The keys, in Faye's order.
    pub fn iter(&self) -> ExpansionIter<'_> {
        ExpansionIter { expansion: self, at: 0, index: 0, scan: 1 }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        3 + self.name().bytes().skip(1).filter(|&b| b == b'/').count()
    }

    /// Never: every channel has at least `/**`, itself and its parent's `/*`.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        &self.keys[3..3 + self.name_len]
    }
}

impl fmt::Debug for Expansion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Expansion {
    type Item = &'a str;
    type IntoIter = ExpansionIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over an [`Expansion`]'s keys.
#[derive(Debug, Clone)]
pub struct ExpansionIter<'a> {
    expansion: &'a Expansion,
    /// Where the next key starts in `keys`.
    at: usize,
    /// Which key is next.
    index: usize,
    /// Where to look for the next cut in the name.
    scan: usize,
}

impl<'a> Iterator for ExpansionIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let e = self.expansion;
        let name = e.name();
        let len = match self.index {
            0 => 3,
            1 => e.name_len,
            2 => name.bytes().skip(1).rposition(|b| b == b'/').map_or(0, |i| i + 1) + 2,
            _ => {
                let rest = name.as_bytes().get(self.scan..)?;
                let cut = self.scan + rest.iter().position(|&b| b == b'/')?;
                self.scan = cut + 1;
                cut + 3
            }
        };
        let key = &e.keys[self.at..self.at + len];
        self.at += len;
        self.index += 1;
        Some(key)
    }
}

/// Faye's `CHANNEL_NAME`: a concrete channel, no wildcards. Only these can be published to.
pub fn is_name(name: &str) -> bool {
    matches!(classify(name), Some((ChannelKind::Name, _)))
}

/// Faye's `CHANNEL_PATTERN`: a name prefix (possibly empty) and a final `*` or `**` segment.
pub fn is_pattern(name: &str) -> bool {
    matches!(classify(name), Some((ChannelKind::OneLevel | ChannelKind::AnyLevels, _)))
}

/// Faye's `Channel.isValid`: a name or a pattern.
pub fn is_valid(name: &str) -> bool {
    classify(name).is_some()
}

/// A valid name or pattern whose first segment is exactly `meta`.
pub fn is_meta(name: &str) -> bool {
    Channel::parse(name).is_some_and(|c| c.is_meta())
}

/// A valid name or pattern whose first segment is exactly `service`.
pub fn is_service(name: &str) -> bool {
    Channel::parse(name).is_some_and(|c| c.is_service())
}

/// What a remote client may subscribe to: valid, neither meta nor service.
pub fn is_subscribable(name: &str) -> bool {
    Channel::parse(name).is_some_and(|c| c.is_subscribable())
}

/// [`Channel::expand`] for any string, as owned keys (Faye's `Channel.expand`, which
/// does not validate either).
///
/// ```
/// assert_eq!(
///     faye_protocol::channel::expand("/foo/bar/qux"),
///     ["/**", "/foo/bar/qux", "/foo/bar/*", "/foo/**", "/foo/bar/**"]
/// );
/// ```
pub fn expand(name: &str) -> Vec<String> {
    Expansion::of(name).iter().map(str::to_owned).collect()
}

/// The shape of a valid name or pattern: its literal segments, and what may follow.
struct Shape<'a> {
    literals: Vec<&'a str>,
    /// How many segments a matching channel has: `(min, max)`, `max = None` for any.
    len: (usize, Option<usize>),
}

fn shape(name: &str) -> Option<Shape<'_>> {
    let (kind, n) = classify(name)?;
    let mut literals: Vec<&str> = name[1..].split('/').collect();
    let len = match kind {
        ChannelKind::Name => return Some(Shape { literals, len: (n, Some(n)) }),
        ChannelKind::OneLevel => (n, Some(n)),
        ChannelKind::AnyLevels => (n, None),
    };
    literals.pop();
    Some(Shape { literals, len })
}

/// Whether a publish to the channel `name` reaches subscribers of `pattern` (a name
/// or a pattern). Invalid input matches nothing.
///
/// ```
/// use faye_protocol::channel::matches;
/// assert!(matches("/foo/**", "/foo/a/b") && matches("/foo/*", "/foo/a") && matches("/foo", "/foo"));
/// assert!(!matches("/foo/*", "/foo/a/b") && !matches("/foo/**", "/foo"));
/// ```
pub fn matches(pattern: &str, name: &str) -> bool {
    // For a concrete name, sharing a channel with it means matching it; this is
    // linear in the segments, where comparing with `expand(name)` is quadratic.
    is_name(name) && overlaps(pattern, name)
}

/// Whether some channel is matched by both `a` and `b` (names or patterns): a
/// subscriber of one could receive a message meant for the other.
///
/// ```
/// use faye_protocol::channel::overlaps;
/// assert!(overlaps("/**", "/private/x") && overlaps("/private/*", "/private/**"));
/// assert!(!overlaps("/*", "/private/**") && !overlaps("/public/**", "/private/**"));
/// ```
pub fn overlaps(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (shape(a), shape(b)) else { return false };
    // Where both have literal segments they must agree; beyond the shorter list of
    // literals the shorter side only has wildcards, which accept anything.
    let agree = a.literals.iter().zip(&b.literals).all(|(x, y)| x == y);
    let min = a.len.0.max(b.len.0);
    let max = match (a.len.1, b.len.1) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    agree && max.is_none_or(|max| min <= max)
}
