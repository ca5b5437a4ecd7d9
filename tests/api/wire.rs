//! Hostile bytes on the wire: invalid UTF-8 in a protobuf string, in
//! metadata, and an oversized message. Each gets a clear status and the
//! server keeps serving.

use cart_service::proto::{CreateCartRequest, GetCartRequest, ListCartsRequest};
use tonic::{
    Code, Request,
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataValue, MetadataValue},
};

use crate::{
    both_stores,
    helpers::{Backend, assert_error, keys, spawn_app, spawn_app_with},
};

/// GetCartRequest's layout with `cart_id` as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetCart {
    #[prost(bytes = "vec", tag = "1")]
    cart_id: Vec<u8>,
}

async fn invalid_utf8_in_a_string_field_is_invalid_argument(b: Backend) {
    let app = spawn_app(b).await;
    let mut grpc = tonic::client::Grpc::new(app.channel());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/cart.v1.CartService/GetCart");
    let codec = tonic_prost::ProstCodec::<RawGetCart, cart_service::proto::Cart>::default();
    let r = grpc
        .unary(
            Request::new(RawGetCart {
                cart_id: vec![0xff, 0xfe, b'a'],
            }),
            path,
            codec,
        )
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let mut c = app.client.clone();
    c.list_carts(ListCartsRequest::default())
        .await
        .expect("still serving");
}

async fn non_ascii_metadata_is_refused_or_ignored_cleanly(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("a", "key-a")])).await;
    let mut c = app.client_with_key(None);
    // Header bytes that are not UTF-8. HTTP allows them (obs-text); tonic's
    // ASCII type does not, hence the unchecked constructor.
    // SAFETY: 0xff and 0xfe are valid in an HTTP header value (no control
    // characters), which is all the underlying HeaderValue requires.
    let bad = unsafe {
        AsciiMetadataValue::from_shared_unchecked(bytes::Bytes::from_static(b"Bearer \xff\xfe"))
    };
    let mut req = Request::new(ListCartsRequest::default());
    req.metadata_mut().insert("authorization", bad);
    assert_error(
        c.list_carts(req).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let mut c = app.client_with_key(Some("key-a"));
    let mut req = Request::new(GetCartRequest {
        cart_id: "x".into(),
    });
    req.metadata_mut().insert(
        "x-request-id",
        MetadataValue::from_static("spaces and % signs"),
    );
    assert_error(
        c.get_cart(req).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
}

async fn oversized_messages_are_refused_by_the_limit(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let r = c
        .create_cart(CreateCartRequest {
            description: "x".repeat(5 * 1024 * 1024),
            ..Default::default()
        })
        .await;
    let status = r.expect_err("a 5 MiB request is refused");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "refused by the size limit: {status:?}"
    );
    c.list_carts(ListCartsRequest::default())
        .await
        .expect("still serving");
}

both_stores!(
    invalid_utf8_in_a_string_field_is_invalid_argument,
    non_ascii_metadata_is_refused_or_ignored_cleanly,
    oversized_messages_are_refused_by_the_limit,
);
