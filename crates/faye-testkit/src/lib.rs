//! Test support for faye-rs: the one raw HTTP/1.1 and WebSocket client the tests
//! speak to servers with, the one form/query encoder, and servers started on free
//! ports (in-process, or the `faye` binary), and throwaway `redis-server`s.
//!
//! Raw on purpose: tests assert the bytes a user's client would see, so nothing
//! here hides a status, a header or a frame bit. WebSocket frames are encoded and
//! decoded with tungstenite's own frame codec, never a second one.
//!
//! ```no_run
//! # async fn demo(faye: faye_http::FayeService<faye_engine::MemoryEngine>) -> std::io::Result<()> {
//! use faye_testkit::http::{Request, fetch};
//!
//! let addr = faye_testkit::server::serve(faye).await;
//! let body = format!("message={}", faye_testkit::form_encode(r#"[{"channel":"/x","data":1}]"#));
//! let reply = fetch(addr, &Request::post("/bayeux").header("Content-Type", "text/plain").body(body)).await?;
//! assert_eq!(reply.status, 200);
//! # Ok(()) }
//! ```

pub mod http;
pub mod redis;
pub mod server;
pub mod ws;

use std::future::Future;
use std::time::Duration;

/// Upper bound for any single HTTP exchange or WebSocket wait that the server is
/// not expected to hold.
pub const QUICK: Duration = Duration::from_secs(5);

/// Await `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// `s` as an `application/x-www-form-urlencoded` value (as browsers send forms
/// and query strings: space as `+`, everything but `A-Za-z0-9*-._` as `%XX`).
///
/// ```
/// assert_eq!(faye_testkit::form_encode("[{\"a\": 1}]"), "%5B%7B%22a%22%3A+1%7D%5D");
/// ```
pub fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `name=value` pairs joined with `&`, each side encoded with [`form_encode`]: a
/// form body or a query string.
///
/// ```
/// assert_eq!(faye_testkit::form(&[("message", "[]"), ("jsonp", "cb")]), "message=%5B%5D&jsonp=cb");
/// ```
pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}
