//! The metrics listener (`--metrics-addr`): `/metrics` in Prometheus' text
//! format, and the health checks `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use faye_engine::Engine;
use faye_http::FayeService;
use faye_server::metrics;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Engine latency buckets, in seconds: 50 µs (memory) to 2.5 s (a stalled Redis).
const ENGINE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Installs the Prometheus recorder (for the whole process) and serves it on
/// `addr`; returns the address bound. The listener stays up while the server
/// drains, so that `/readyz` there says so.
pub(crate) async fn metrics_listener<E: Engine>(
    addr: &str,
    faye: FayeService<E>,
) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(metrics::ENGINE_SECONDS.into()), ENGINE_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    // Histograms are folded in by upkeep (also done on each scrape).
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::describe();
    faye_http::counted::describe();
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
        // The engine's totals are sampled now rather than kept up to date on
        // every delivery.
        metrics::engine_stats(faye.server().engine().stats());
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
