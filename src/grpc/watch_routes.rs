//! `cart.v1.CartService` as served: the generated server for every call
//! but the two watch calls, which are served here with each event encoded
//! once per replica (`super::encoded`) instead of once per stream. The
//! generated trait's own watch methods give the same stream, rendered per
//! stream; they are what a server without these routes would run.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, StdError, http},
    server::{Grpc, NamedService},
};

use super::{codec::EncodedCodec, encoded::EncodedEvents, service::CartApi, status::to_status};
use crate::{proto::cart_service_server::CartServiceServer, watch::WatchStream};

const WATCH_CART: &str = "/cart.v1.CartService/WatchCart";
const WATCH_CARTS: &str = "/cart.v1.CartService/WatchCarts";

#[derive(Clone)]
pub struct CartRoutes {
    api: Arc<CartApi>,
    generated: CartServiceServer<CartApi>,
    encoded: Arc<EncodedEvents>,
    max_decoding: usize,
}

impl CartRoutes {
    /// Requests larger than `max_decoding` bytes are refused, as the
    /// generated server's `max_decoding_message_size` does.
    pub fn new(api: CartApi, max_decoding: usize) -> CartRoutes {
        let api = Arc::new(api);
        CartRoutes {
            generated: CartServiceServer::from_arc(api.clone())
                .max_decoding_message_size(max_decoding),
            api,
            encoded: Arc::default(),
            max_decoding,
        }
    }

    fn grpc<U>(&self) -> Grpc<EncodedCodec<U>>
    where
        U: prost::Message + Default + Send + 'static,
    {
        Grpc::new(EncodedCodec::default()).max_decoding_message_size(self.max_decoding)
    }
}

impl NamedService for CartRoutes {
    const NAME: &'static str = <CartServiceServer<CartApi> as NamedService>::NAME;
}

/// A watcher's stream as encoded events.
fn encoded(
    stream: WatchStream,
    cache: Arc<EncodedEvents>,
) -> impl Stream<Item = Result<Bytes, Status>> + Send + 'static {
    stream.map(move |r| match r {
        Ok(w) => Ok(cache.watched(&w)),
        Err(e) => Err(to_status(*e)),
    })
}

impl<B> tower::Service<http::Request<B>> for CartRoutes
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            WATCH_CART => self.serve(req, |api, r| async move { api.open_cart_watch(&r).await }),
            WATCH_CARTS => self.serve(req, |api, r| async move { api.open_tenant_watch(&r).await }),
            _ => self.generated.call(req),
        }
    }
}

impl CartRoutes {
    /// A watch call: the request decoded, the stream `open` gives, its
    /// events encoded through the shared cache.
    fn serve<U, B, F, Opened>(
        &self,
        req: http::Request<B>,
        open: F,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        U: prost::Message + Default + Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        F: Fn(Arc<CartApi>, Request<U>) -> Opened + Send + 'static,
        Opened: Future<Output = Result<WatchStream, Status>> + Send + 'static,
    {
        let mut grpc = self.grpc::<U>();
        let (api, cache) = (self.api.clone(), self.encoded.clone());
        let watch = tower::service_fn(move |r: Request<U>| {
            let opened = open(api.clone(), r);
            let cache = cache.clone();
            async move { Ok::<_, Status>(Response::new(encoded(opened.await?, cache))) }
        });
        Box::pin(async move { Ok(grpc.server_streaming(watch, req).await) })
    }
}
