//! Which `permessage-deflate` offer the server accepts (RFC 7692 §5, §7.1), and
//! what it answers.
//!
//! Agreed: `server_no_context_takeover` always (the server compresses each message
//! on its own, which RFC 7692 §7.1.1.1 lets it say unasked);
//! `client_no_context_takeover` when the client offered it; `server_max_window_bits`
//! with the client's value when it asked for one from 9 to 15, which the server then
//! compresses with. Declined: `server_max_window_bits=8` (zlib cannot make raw
//! deflate with a 256-byte window, and the RFC forbids answering a larger one),
//! unknown or repeated parameters, invalid values.

use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::{HeaderMap, HeaderValue};

/// A window the server can compress with: 9 to 15 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WindowBits(u8);

impl WindowBits {
    /// 32 KiB, deflate's largest window.
    pub(crate) const MAX: Self = Self(15);

    /// `bits` if the server can compress with that window.
    pub(crate) fn new(bits: u8) -> Option<Self> {
        (9..=15).contains(&bits).then_some(Self(bits))
    }

    /// The base-2 logarithm of the window size.
    pub(crate) fn get(self) -> u8 {
        self.0
    }
}

/// What a successful negotiation agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The client promised to compress each message on its own.
    pub(crate) client_no_context_takeover: bool,
    /// The window the client asked the server to stay within, if it did.
    pub(crate) server_max_window_bits: Option<WindowBits>,
}

impl Agreed {
    /// The window the server compresses its messages with.
    pub(crate) fn server_window(self) -> WindowBits {
        self.server_max_window_bits.unwrap_or(WindowBits::MAX)
    }

    /// The `Sec-WebSocket-Extensions` value of the handshake reply.
    ///
    /// `server_max_window_bits` is echoed when asked for, as RFC 7692 §7.1.2.1
    /// requires of a server accepting it. `client_max_window_bits` never is: it is
    /// optional in a response, and a 32 KiB inflater reads any window the client
    /// picks.
    pub(crate) fn response(self) -> HeaderValue {
        let mut text = String::from("permessage-deflate; server_no_context_takeover");
        if self.client_no_context_takeover {
            text.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            text.push_str("; server_max_window_bits=");
            text.push_str(&bits.get().to_string());
        }
        // Tokens, `;`, `=`, spaces and digits only.
        HeaderValue::try_from(text).expect("a valid header value")
    }
}

/// The first `permessage-deflate` offer in the request's `Sec-WebSocket-Extensions`
/// that the server can honour, if any.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Agreed> {
    let mut joined = String::new();
    for value in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        // A header that is not visible ASCII offers nothing we can read.
        let value = value.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    parse_offers(&joined)?
        .into_iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case("permessage-deflate"))
        .find_map(|offer| accept(&offer.params))
}

/// One extension offer: its name and `;` parameters (values unquoted).
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<&'a str>)>,
}

/// Parses RFC 6455's `Sec-WebSocket-Extensions` grammar: comma-separated
/// `token *(";" token ["=" (token / quoted-string)])`, empty list elements allowed.
/// `None` when the header does not follow it.
fn parse_offers(header: &str) -> Option<Vec<Offer<'_>>> {
    let mut p = Parser { s: header, i: 0 };
    let mut offers = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        if p.done() {
            return Some(offers);
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if !p.eat(b';') {
                break;
            }
            p.skip_ws();
            let key = p.token()?;
            p.skip_ws();
            let value = if p.eat(b'=') {
                p.skip_ws();
                Some(if p.peek() == Some(b'"') { p.quoted()? } else { p.token()? })
            } else {
                None
            };
            params.push((key, value));
        }
        offers.push(Offer { name, params });
        p.skip_ws();
        if !p.done() && !p.eat(b',') {
            return None;
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A quoted-string's content. Escapes are kept as they are: no value this
    /// module accepts contains one.
    fn quoted(&mut self) -> Option<&'a str> {
        let start = self.i + 1;
        let mut i = start;
        let bytes = self.s.as_bytes();
        loop {
            match bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        self.i = i + 1;
        self.s.get(start..i)
    }
}

/// RFC 7230's `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 7692's window bits value: `8`..`15`, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 || !value.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Whether the server can honour one `permessage-deflate` offer (RFC 7692 §7.1).
fn accept(params: &[(&str, Option<&str>)]) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut agreed = Agreed { client_no_context_takeover: false, server_max_window_bits: None };
    for &(key, value) in params {
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                // Granted anyway: every server message is compressed on its own.
                value.is_none().then_some(0)?
            }
            "client_no_context_takeover" => {
                agreed.client_no_context_takeover = true;
                value.is_none().then_some(1)?
            }
            "server_max_window_bits" => {
                // 8 is valid but beyond zlib: declined rather than answered larger.
                agreed.server_max_window_bits = Some(WindowBits::new(window_bits(value?)?)?);
                2
            }
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(values: &[&str]) -> Option<Agreed> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(v).unwrap());
        }
        negotiate(&headers)
    }

    const TAKEOVER: Option<Agreed> =
        Some(Agreed { client_no_context_takeover: false, server_max_window_bits: None });
    const NO_TAKEOVER: Option<Agreed> =
        Some(Agreed { client_no_context_takeover: true, server_max_window_bits: None });

    fn window(bits: u8) -> Option<Agreed> {
        Some(Agreed { server_max_window_bits: WindowBits::new(bits), ..TAKEOVER.unwrap() })
    }

    #[test]
    fn parses_offers() {
        let offers =
            parse_offers(r#" a ; x=1;y ,, b;z="q,;" , permessage-deflate;client_max_window_bits"#)
                .unwrap();
        assert_eq!(
            offers,
            [
                Offer { name: "a", params: vec![("x", Some("1")), ("y", None)] },
                Offer { name: "b", params: vec![("z", Some("q,;"))] },
                Offer {
                    name: "permessage-deflate",
                    params: vec![("client_max_window_bits", None)]
                },
            ]
        );
        assert_eq!(parse_offers(""), Some(vec![]));
        for bad in ["a b", "a;", "a;=1", "a;x=", r#"a;x="1"#, "a;x=1=2", ";a"] {
            assert_eq!(parse_offers(bad), None, "{bad}");
        }
    }

    #[test]
    fn negotiates_what_it_can_honour() {
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["permessage-deflate"]), TAKEOVER);
        // Chromium's and the Node permessage-deflate client's offer.
        assert_eq!(offered(&["permessage-deflate; client_max_window_bits"]), TAKEOVER);
        assert_eq!(
            offered(&["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"]),
            TAKEOVER
        );
        assert_eq!(offered(&["permessage-deflate; server_max_window_bits=15"]), window(15));
        assert_eq!(offered(&[r#"permessage-deflate; server_max_window_bits="15""#]), window(15));
        for bits in 9..=15 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(offered(&[&offer]), window(bits), "{offer}");
        }
        assert_eq!(
            offered(&["permessage-deflate; client_no_context_takeover; client_max_window_bits"]),
            NO_TAKEOVER
        );
        assert_eq!(offered(&["x-webkit-deflate-frame, Permessage-Deflate"]), TAKEOVER);
        // Declined offers.
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits, x y",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offered(&[bad]), None, "{bad}");
        }
        // The first offer it can honour wins, across header lines too.
        assert_eq!(
            offered(&[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; client_no_context_takeover, permessage-deflate",
            ]),
            NO_TAKEOVER
        );
    }

    #[test]
    fn responses() {
        assert_eq!(TAKEOVER.unwrap().response(), "permessage-deflate; server_no_context_takeover");
        assert_eq!(
            NO_TAKEOVER.unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            window(9).unwrap().response(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        let both = Agreed { client_no_context_takeover: true, ..window(15).unwrap() };
        assert_eq!(
            both.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=15"
        );
    }

    #[test]
    fn compresses_within_the_agreed_window() {
        assert_eq!(TAKEOVER.unwrap().server_window(), WindowBits::MAX);
        assert_eq!(window(11).unwrap().server_window().get(), 11);
        assert_eq!(WindowBits::new(8), None);
        assert_eq!(WindowBits::new(16), None);
    }
}
