//! The tower layer that authenticates each call once, before anything else
//! looks at it, and leaves the outcome in the request's extensions (tonic
//! hands them to the services). Logs, metrics, admission and the services
//! read the caller from there; a failure is answered by the services that
//! need a caller (health and reflection need none).

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::codegen::http::Request;
use tower::{Layer, Service};

use super::Authenticator;
use crate::domain::Authentication;

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let header = req.headers().get("authorization").map(|v| v.as_bytes());
        let outcome = self.auth.authenticate(header);
        req.extensions_mut().insert(Authentication(outcome));
        self.inner.call(req)
    }
}
