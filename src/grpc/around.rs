//! The shape the replica's own call layers share (admission, deadlines,
//! fair turns): a tower layer whose service hands each request to a hook
//! that decides what happens around the inner call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a layer does around a call: answer it alone, or run `call` (the
/// inner service, whose future starts its work when polled) with whatever
/// the layer holds meanwhile.
pub trait Around: Clone {
    fn around<B, R, E, F>(
        &self,
        req: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> BoxFuture<Result<Response<R>, E>>
    where
        R: Default + Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<Response<R>, E>> + Send + 'static;
}

/// The layer of a hook.
#[derive(Clone)]
pub struct AroundLayer<H>(pub H);

impl<S, H: Clone> Layer<S> for AroundLayer<H> {
    type Service = AroundService<S, H>;

    fn layer(&self, inner: S) -> AroundService<S, H> {
        AroundService {
            inner,
            hook: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AroundService<S, H> {
    inner: S,
    hook: H,
}

impl<S, B, R, H> Service<Request<B>> for AroundService<S, H>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
    H: Around,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = &mut self.inner;
        self.hook.around(req, |req| inner.call(req))
    }
}
