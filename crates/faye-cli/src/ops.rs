//! The metrics listener (`--metrics-addr`): `/metrics` in Prometheus' text
//! format, and the health checks `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use faye_engine::Engine;
use faye_http::FayeService;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the Prometheus recorder (for the whole process) and serves it on
/// `addr`; returns the address bound. The listener stays up while the server
/// drains, so that `/readyz` there says so.
pub(crate) async fn metrics_listener<E: Engine>(
    addr: &str,
    faye: FayeService<E>,
) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    faye_server::metrics::describe();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (faye, handle) = (faye.clone(), handle.clone());
            let service = hyper::service::service_fn(move |req| {
                let (faye, handle) = (faye.clone(), handle.clone());
                async move { Ok::<_, Infallible>(answer(&faye, &handle, req).await) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.http1_only().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(local)
}

async fn answer<E: Engine, B>(
    faye: &FayeService<E>,
    handle: &PrometheusHandle,
    req: http::Request<B>,
) -> Response<faye_http::FayeBody> {
    if let Some(res) = faye_http::health(faye, &req).await {
        return res;
    }
    let (status, content_type, body) = if req.uri().path() == "/metrics" {
        (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", handle.render())
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "/metrics, /healthz or /readyz\n".into(),
        )
    };
    let mut res = Response::new(Full::new(Bytes::from(body)).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    res
}
