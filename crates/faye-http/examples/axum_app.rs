//! An axum app that serves its own pages and mounts Faye under a sub-path.
//!
//! ```sh
//! cargo run -p faye-http --example axum_app
//! # optional: serve the official browser client at /node/myapp/faye/client.js
//! # instead of faye-rs's own
//! FAYE_CLIENT_JS=interop/node_modules/faye/client/faye-browser-min.js cargo run -p faye-http --example axum_app
//! ```
//! Then open http://127.0.0.1:8000/ in two tabs and chat.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};

/// Where Faye lives inside the app.
pub(crate) const FAYE_PATH: &str = "/node/myapp/faye";

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>faye-rs chat</title>
<script src="/node/myapp/faye/client.js"></script>
<ul id="log"></ul>
<form id="f"><input id="text" autofocus><button>Send</button></form>
<script>
  const client = new Faye.Client(location.origin + '/node/myapp/faye');
  client.subscribe('/chat', (m) => {
    const li = document.createElement('li'); li.textContent = m.text; log.appendChild(li);
  });
  f.onsubmit = (e) => { e.preventDefault(); client.publish('/chat', {text: text.value}); text.value = ''; };
</script>
"#;

/// The app: its own routes, plus Faye nested at [`FAYE_PATH`]. axum strips the
/// prefix, so Faye itself is mounted at `/`.
pub(crate) fn app(client_js: Option<Vec<u8>>) -> (Router, FayeService<MemoryEngine>) {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let mut options = FayeOptions::default().mount("/");
    if let Some(script) = client_js {
        options = options.client_script(script);
    }
    let faye = FayeService::new(server, options);
    let router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(|| async { "ok" }))
        .nest_service(FAYE_PATH, faye.clone());
    (router, faye)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> anyhow::Result<()> {
    let client_js = std::env::var_os("FAYE_CLIENT_JS").map(std::fs::read).transpose()?;
    let (router, faye) = app(client_js);
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("app on http://{}/ with Faye at {FAYE_PATH}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            faye.shutdown(std::time::Duration::from_secs(5)).await;
        })
        .await?;
    Ok(())
}
