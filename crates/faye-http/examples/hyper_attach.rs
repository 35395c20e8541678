//! Faye attached to a plain hyper app with `FayeLayer`, like Faye's `attach(server)`:
//! requests under `/faye` go to Faye, everything else to the app.
//!
//! ```sh
//! cargo run -p faye-http --example hyper_attach
//! curl http://127.0.0.1:8000/            # the app
//! curl -d 'message={"channel":"/news","data":"hi"}' http://127.0.0.1:8000/faye   # Faye
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use faye_engine::MemoryEngine;
use faye_http::{Attached, FayeLayer, FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tower_layer::Layer;

/// The app that was there before Faye.
#[derive(Clone)]
pub(crate) struct App;

impl<B> tower_service::Service<Request<B>> for App {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let body = format!("hello from the app at {}", req.uri().path());
        std::future::ready(Ok(Response::new(Full::new(Bytes::from(body)))))
    }
}

/// The app with Faye attached at `/faye`.
pub(crate) fn attached() -> Attached<MemoryEngine, App> {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let faye = FayeService::new(server, FayeOptions::default().mount("/faye"));
    FayeLayer::new(faye).layer(App)
}

/// Serves `service` on `listener`, one task per connection, upgrades included.
pub(crate) async fn serve(listener: tokio::net::TcpListener, service: Attached<MemoryEngine, App>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("app on http://{}/ with Faye at /faye", listener.local_addr()?);
    serve(listener, attached()).await;
    Ok(())
}
