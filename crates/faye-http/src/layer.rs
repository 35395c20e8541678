//! Attaching Faye to an existing app, like Faye's `attach(httpServer)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use faye_engine::Engine;
use http::{Request, Response};
use http_body_util::Either;
use tower_service::Service;

use crate::{FayeBody, FayeService};

/// A tower layer that answers requests under Faye's mount and passes every other
/// request to the service it wraps, as Faye's `attach(server)` does.
///
/// ```ignore
/// let faye = FayeService::new(server, FayeOptions::default().mount("/faye"));
/// let app_with_faye = FayeLayer::new(faye).layer(my_app);
/// ```
///
/// `examples/hyper_attach.rs` is a complete, tested program.
#[derive(Clone, Debug)]
pub struct FayeLayer<E: Engine> {
    faye: FayeService<E>,
}

impl<E: Engine> FayeLayer<E> {
    /// Attaches `faye` at its configured mount.
    pub fn new(faye: FayeService<E>) -> Self {
        Self { faye }
    }
}

impl<E: Engine, S> tower_layer::Layer<S> for FayeLayer<E> {
    type Service = Attached<E, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Attached { faye: self.faye.clone(), inner }
    }
}

/// An app with Faye attached; see [`FayeLayer`].
#[derive(Clone, Debug)]
pub struct Attached<E: Engine, S> {
    faye: FayeService<E>,
    inner: S,
}

impl<E, S, B, ResBody> Service<Request<B>> for Attached<E, S>
where
    E: Engine,
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Either<FayeBody, ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.faye.shared.options.matches(req.uri().path()) {
            let faye = self.faye.clone();
            return Box::pin(async move { Ok(faye.handle(req, None).await.map(Either::Left)) });
        }
        // The ready clone stays with the call; a fresh clone waits for the next one.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move { Ok(inner.call(req).await?.map(Either::Right)) })
    }
}
