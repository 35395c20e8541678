//! Channel names and patterns: Faye's grammar, kinds and `expand`.
//!
//! A segment is one or more of `A-Z a-z 0-9 - _ ! ~ ( ) $ @`. A name is `/seg(/seg)*`;
//! a pattern is a name prefix followed by a final `/*` or `/**`.

/// Whether `c` may appear in a channel segment.
fn is_segment_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'!' | b'~' | b'(' | b')' | b'$' | b'@')
}

/// Splits `/a/b` into `["a", "b"]` if every segment is a non-empty run of segment
/// characters; the last segment may instead be `*` or `**` when `allow_wildcard`.
fn segments(name: &str, allow_wildcard: bool) -> Option<Vec<&str>> {
    let rest = name.strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        let ok = if allow_wildcard && i == last && (*seg == "*" || *seg == "**") {
            true
        } else {
            !seg.is_empty() && seg.bytes().all(is_segment_byte)
        };
        if !ok {
            return None;
        }
    }
    Some(segs)
}

/// Faye's `CHANNEL_NAME`: a concrete channel, no wildcards. Only these can be published to.
pub fn is_name(name: &str) -> bool {
    segments(name, false).is_some()
}

/// Faye's `CHANNEL_PATTERN`: a name prefix (possibly empty) and a final `*` or `**` segment.
pub fn is_pattern(name: &str) -> bool {
    matches!(segments(name, true), Some(s) if matches!(*s.last().unwrap_or(&""), "*" | "**"))
}

/// Faye's `Channel.isValid`: a name or a pattern.
pub fn is_valid(name: &str) -> bool {
    segments(name, true).is_some()
}

fn first_segment_is(name: &str, first: &str) -> bool {
    is_valid(name) && name[1..].split('/').next() == Some(first)
}

/// A valid name or pattern whose first segment is exactly `meta`.
pub fn is_meta(name: &str) -> bool {
    first_segment_is(name, "meta")
}

/// A valid name or pattern whose first segment is exactly `service`.
pub fn is_service(name: &str) -> bool {
    first_segment_is(name, "service")
}

/// What a remote client may subscribe to: valid, neither meta nor service.
pub fn is_subscribable(name: &str) -> bool {
    is_valid(name) && !is_meta(name) && !is_service(name)
}

/// Every subscription key a publish to `name` must reach, in Faye's order:
/// `/**`, the name, the name with its last segment replaced by `*`, then each proper
/// prefix followed by `/**`. A name of n segments gives n + 2 keys.
///
/// ```
/// assert_eq!(
///     faye_protocol::channel::expand("/foo/bar/qux"),
///     ["/**", "/foo/bar/qux", "/foo/bar/*", "/foo/**", "/foo/bar/**"]
/// );
/// ```
pub fn expand(name: &str) -> Vec<String> {
    let mut keys = Vec::with_capacity(4);
    keys.push("/**".to_owned());
    keys.push(name.to_owned());
    // Byte offsets of every '/' except the leading one: the ends of the proper prefixes.
    let cuts: Vec<usize> = name.match_indices('/').map(|(i, _)| i).skip(1).collect();
    let parent = cuts.last().map_or("", |&i| &name[..i]);
    keys.push(format!("{parent}/*"));
    for &cut in &cuts {
        keys.push(format!("{}/**", &name[..cut]));
    }
    keys
}

/// The shape of a valid name or pattern: its literal segments, and what may follow.
struct Shape<'a> {
    literals: Vec<&'a str>,
    /// How many segments a matching channel has: `(min, max)`, `max = None` for any.
    len: (usize, Option<usize>),
}

fn shape(name: &str) -> Option<Shape<'_>> {
    let mut segs = segments(name, true)?;
    let n = segs.len();
    let len = match *segs.last()? {
        "*" => (n, Some(n)),
        "**" => (n, None),
        _ => return Some(Shape { literals: segs, len: (n, Some(n)) }),
    };
    segs.pop();
    Some(Shape { literals: segs, len })
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
