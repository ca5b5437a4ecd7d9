//! `cart.v1.CartService` as served. The calls that answer carts (ListCarts
//! included) are served here with the carts encoded straight from the
//! domain values (`super::wire`), and the two watch calls with each event
//! encoded once per replica (`super::encoded`) instead of once per stream.
//! The generated trait's own methods give the same answers through
//! messages (`wire` is tested to write the same bytes); they are what a
//! server without these routes would run.

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

use super::{
    codec::AnswerCodec, encoded::EncodedEvents, service::CartApi, status::to_status, wire::Answer,
};
use crate::{proto::cart_service_server::CartServiceServer, watch::WatchStream};

const SERVICE: &str = "/cart.v1.CartService/";

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

    fn grpc<C: tonic::codec::Codec>(&self, codec: C) -> Grpc<C> {
        Grpc::new(codec).max_decoding_message_size(self.max_decoding)
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
        let Some(method) = req.uri().path().strip_prefix(SERVICE) else {
            return self.generated.call(req);
        };
        match method {
            "CreateCart" => {
                self.answer(req, |api, r| async move { api.answer_create_cart(r).await })
            }
            "ListCarts" => self.answer(req, |api, r| async move { api.answer_list_carts(r).await }),
            "GetCart" => self.answer(req, |api, r| async move { api.answer_get_cart(r).await }),
            "AddItems" => self.answer(req, |api, r| async move { api.answer_add_items(r).await }),
            "SetItems" => self.answer(req, |api, r| async move { api.answer_set_items(r).await }),
            "RemoveItems" => self.answer(
                req,
                |api, r| async move { api.answer_remove_items(r).await },
            ),
            "ClearCart" => self.answer(req, |api, r| async move { api.answer_clear_cart(r).await }),
            "UpdateCart" => {
                self.answer(req, |api, r| async move { api.answer_update_cart(r).await })
            }
            "MergeCarts" => {
                self.answer(req, |api, r| async move { api.answer_merge_carts(r).await })
            }
            "SubmitCart" => {
                self.answer(req, |api, r| async move { api.answer_submit_cart(r).await })
            }
            "ConfirmCart" => self.answer(
                req,
                |api, r| async move { api.answer_confirm_cart(r).await },
            ),
            "CancelCart" => {
                self.answer(req, |api, r| async move { api.answer_cancel_cart(r).await })
            }
            "WatchCart" => self.watch(req, |api, r| async move { api.open_cart_watch(&r).await }),
            "WatchCarts" => {
                self.watch(req, |api, r| async move { api.open_tenant_watch(&r).await })
            }
            _ => self.generated.call(req),
        }
    }
}

impl CartRoutes {
    /// A call that answers carts: the request decoded, what `work`
    /// answers encoded.
    fn answer<T, U, B, F, Answered>(
        &self,
        req: http::Request<B>,
        work: F,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        U: prost::Message + Default + Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        F: Fn(Arc<CartApi>, Request<U>) -> Answered + Send + 'static,
        T: Answer,
        Answered: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let mut grpc = self.grpc(AnswerCodec::<T, U>::default());
        let api = self.api.clone();
        let call = tower::service_fn(move |r: Request<U>| {
            let answered = work(api.clone(), r);
            async move { answered.await.map(Response::new) }
        });
        Box::pin(async move { Ok(grpc.unary(call, req).await) })
    }

    /// A watch call: the request decoded, the stream `open` gives, its
    /// events encoded through the shared cache.
    fn watch<U, B, F, Opened>(
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
        let mut grpc = self.grpc(AnswerCodec::<Bytes, U>::default());
        let (api, cache) = (self.api.clone(), self.encoded.clone());
        let watch = tower::service_fn(move |r: Request<U>| {
            let opened = open(api.clone(), r);
            let cache = cache.clone();
            async move { Ok::<_, Status>(Response::new(encoded(opened.await?, cache))) }
        });
        Box::pin(async move { Ok(grpc.server_streaming(watch, req).await) })
    }
}
