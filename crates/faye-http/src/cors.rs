//! Cross-origin requests (§4.7): Faye's preflight answer and the headers on actual
//! requests, plus an optional allow-list of origins, which also guards the
//! transports a browser reaches without asking CORS (WebSocket, EventSource,
//! JSON-P).

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::{FayeBody, FayeOptions, full, text};

impl FayeOptions {
    /// Whether a page at `origin` (`scheme://host[:port]`) may use the server: the
    /// one rule for CORS and for every transport.
    fn origin_allowed(&self, origin: &[u8]) -> bool {
        match &self.allowed_origins {
            None => true,
            // An opaque origin (sandboxed frame, `file:` or `data:` page) is shared
            // by every such page, so listing it would let any site in.
            Some(_) if origin == b"null" => false,
            Some(list) => list.iter().any(|a| a.as_bytes() == origin),
        }
    }
}

/// The header that names the page a request comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PageBy {
    /// `Origin`, which browsers send on every WebSocket upgrade and cross-origin
    /// EventSource.
    Origin,
    /// `Origin` when there is one, else the origin of `Referer`: a `<script>` tag
    /// (JSON-P) sends no `Origin` unless it has a `crossorigin` attribute.
    OriginOrReferer,
}

/// With an allow-list, a 403 `text/plain` reply for a request whose page is not on
/// it; `None` when the request may go on. A request naming no page is allowed:
/// non-browser clients (Node's faye client) send neither header, and browsers may
/// strip `Referer`.
pub(crate) fn refuse_foreign(
    opts: &FayeOptions,
    headers: &HeaderMap,
    by: PageBy,
) -> Option<Response<FayeBody>> {
    opts.allowed_origins.as_ref()?;
    let why = match (headers.get(header::ORIGIN), by) {
        (Some(origin), _) if opts.origin_allowed(origin.as_bytes()) => return None,
        (Some(origin), _) => refusal("origin", &String::from_utf8_lossy(origin.as_bytes())),
        (None, PageBy::Origin) => return None,
        (None, PageBy::OriginOrReferer) => match referer_origin(headers.get(header::REFERER)?) {
            Some(origin) if opts.origin_allowed(origin.as_bytes()) => return None,
            Some(origin) => refusal("the referrer's origin", &origin),
            None => "Forbidden: the referrer names no origin".to_owned(),
        },
    };
    let mut res = text(StatusCode::FORBIDDEN, why);
    res.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(res)
}

fn refusal(what: &str, origin: &str) -> String {
    if origin == "null" {
        format!("Forbidden: {what} null (a sandboxed or local page) is never allowed here")
    } else {
        format!("Forbidden: {what} {origin} is not in the allowed origins")
    }
}

/// The origin of an absolute URL as browsers serialize it: lowercase scheme and
/// host, the port only when it is not the scheme's default. `None` for anything
/// without a host, or with credentials (which browsers strip from `Referer`).
fn referer_origin(referer: &HeaderValue) -> Option<String> {
    let url = referer.to_str().ok()?;
    let (scheme, rest) = url.split_once("://")?;
    let scheme: http::uri::Scheme = scheme.parse().ok()?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority: http::uri::Authority = rest[..end].parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let scheme = scheme.as_str().to_ascii_lowercase();
    let host = authority.host().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match authority.port_u16() {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Faye treats `OPTIONS`, and any request announcing a POST preflight, as a preflight.
pub(crate) fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS
        || headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).is_some_and(|m| m == "POST")
}

/// Faye's preflight reply: 200, empty body, the origin (else the referrer, else `*`).
pub(crate) fn preflight(opts: &FayeOptions, headers: &HeaderMap) -> Response<FayeBody> {
    let mut res = Response::new(full(bytes::Bytes::new()));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    let origin = match headers.get(header::ORIGIN) {
        Some(origin) if opts.origin_allowed(origin.as_bytes()) => origin.clone(),
        Some(_) => return res,
        None if opts.allowed_origins.is_some() => return res,
        None => headers.get(header::REFERER).cloned().unwrap_or(HeaderValue::from_static("*")),
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Authorization, Content-Type, Pragma, X-Requested-With"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    res
}

/// On actual requests: reflect an allowed `Origin` with credentials.
pub(crate) fn allow_origin(opts: &FayeOptions, request: &HeaderMap, response: &mut HeaderMap) {
    response.insert(header::VARY, HeaderValue::from_static("Origin"));
    let origin = request.get(header::ORIGIN);
    if let Some(origin) = origin.filter(|o| opts.origin_allowed(o.as_bytes())) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::referer_origin;
    use http::HeaderValue;

    #[test]
    fn a_referrer_is_reduced_to_its_origin_as_browsers_write_origins() {
        let cases = [
            ("https://good.example/", Some("https://good.example")),
            ("https://Good.Example:443/page?q=1#top", Some("https://good.example")),
            ("HTTP://good.example:80", Some("http://good.example")),
            ("http://good.example:8080/a/b", Some("http://good.example:8080")),
            ("https://good.example?x=/y", Some("https://good.example")),
            ("http://[::1]:9000/", Some("http://[::1]:9000")),
            ("https://user:pw@good.example/", None),
            ("https:///path", None),
            ("good.example/page", None),
            ("about:client", None),
            ("", None),
        ];
        for (referer, origin) in cases {
            let got = referer_origin(&HeaderValue::from_str(referer).unwrap());
            assert_eq!(got.as_deref(), origin, "{referer}");
        }
    }
}
