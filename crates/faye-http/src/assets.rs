//! Static files under the mount (§4.3): `<mount>/client.js` and `<mount>.js`.
//!
//! faye-rs has no browser client of its own yet; an operator can serve the official
//! bundle (npm `faye`'s `client/faye-browser-min.js`) with
//! [`FayeOptions::client_script`](crate::FayeOptions::client_script).

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::{FayeBody, FayeOptions, full, text};

/// The browser client, with its validator computed once.
#[derive(Debug, Clone)]
pub(crate) struct ClientScript {
    body: Bytes,
    etag: HeaderValue,
}

impl ClientScript {
    pub(crate) fn new(body: Bytes) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"{:016x}-{}\"", hasher.finish(), body.len()))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        Self { body, etag }
    }
}

/// Faye serves static files for any path under the mount ending in `.js` or `.map`.
pub(crate) fn is_asset(path: &str) -> bool {
    path.ends_with(".js") || path.ends_with(".map")
}

pub(crate) fn serve(opts: &FayeOptions, path: &str, headers: &HeaderMap) -> Response<FayeBody> {
    let file = path.rsplit('/').next().unwrap_or("");
    let mount_name = opts.mount.rsplit('/').next().unwrap_or("");
    let is_client = file == "client.js"
        || file == "faye-browser.js"
        || file == "faye-browser-min.js"
        || (!mount_name.is_empty() && file.strip_suffix(".js") == Some(mount_name));
    let Some(script) = opts.client_script.as_ref().filter(|_| is_client) else {
        let why = if is_client {
            "No browser client is configured on this server (faye serve --client-js FILE)"
        } else {
            "Not found"
        };
        return text(StatusCode::NOT_FOUND, why);
    };
    if headers.get(header::IF_NONE_MATCH) == Some(&script.etag) {
        let mut res = Response::new(full(Bytes::new()));
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res.headers_mut().insert(header::ETAG, script.etag.clone());
        return res;
    }
    let mut res = Response::new(full(script.body.clone()));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::ETAG, script.etag.clone());
    res
}
