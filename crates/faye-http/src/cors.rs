//! Cross-origin requests (§4.7): Faye's preflight answer and the headers on actual
//! requests, plus an optional allow-list of origins.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::{FayeBody, FayeOptions, full};

impl FayeOptions {
    /// Whether `origin` may make credentialed cross-origin requests.
    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        match &self.allowed_origins {
            None => true,
            Some(list) => origin.to_str().is_ok_and(|o| list.iter().any(|a| a == o)),
        }
    }
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
        Some(origin) if opts.origin_allowed(origin) => origin.clone(),
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
    if let Some(origin) = request.get(header::ORIGIN).filter(|o| opts.origin_allowed(o)) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}
