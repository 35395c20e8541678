//! Static files under the mount (§4.3): `<mount>/client.js` and `<mount>.js`.
//!
//! By default they serve faye-rs's own browser client ([`CLIENT_JS`], built from
//! `clients/js` in the repository and embedded here); an operator can serve
//! another file instead (npm `faye`'s `client/faye-browser-min.js`, say) with
//! [`FayeOptions::client_script`](crate::FayeOptions::client_script).

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::{FayeBody, FayeOptions, full, text};

/// faye-rs's browser client: a script defining the global `Faye`, with Faye's
/// client API (`new Faye.Client(url)`, `subscribe`, `publish`, ...). Built from
/// `clients/js/src` (the committed build output; `scripts/test` checks that it
/// is what the source builds to). [`FayeService`](crate::FayeService) serves it
/// at `<mount>/client.js` unless told otherwise.
pub const CLIENT_JS: &[u8] = include_bytes!("../assets/client.js");

/// Caches may keep the script, but ask again each time (a `304` when unchanged),
/// so that a server upgrade reaches every page at its next load.
const CACHE_CONTROL: &str = "public, no-cache";

static EMBEDDED: LazyLock<ClientScript> =
    LazyLock::new(|| ClientScript::new(Bytes::from_static(CLIENT_JS)));

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

    /// The embedded client.
    pub(crate) fn embedded() -> Self {
        EMBEDDED.clone()
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
        let why =
            if is_client { "No browser client is served by this server" } else { "Not found" };
        return text(StatusCode::NOT_FOUND, why);
    };
    let cache = HeaderValue::from_static(CACHE_CONTROL);
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/") == script.etag);
    if matches {
        let mut res = Response::new(full(Bytes::new()));
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res.headers_mut().insert(header::ETAG, script.etag.clone());
        res.headers_mut().insert(header::CACHE_CONTROL, cache);
        return res;
    }
    let mut res = Response::new(full(script.body.clone()));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::ETAG, script.etag.clone());
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}
