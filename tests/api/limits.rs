//! Bounds on what one caller can make a replica hold: watch streams per
//! tenant, the encoded size of a cart, the size of a ListCarts page, and
//! deadlines that end waiting without doing the work.

use std::time::{Duration, Instant};

use cart_service::proto::{WatchCartRequest, WatchCartsRequest};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, Client, assert_error, create_cart, keys, spawn_app_with},
};

async fn watch_carts(
    c: &mut Client,
) -> Result<tonic::Streaming<cart_service::proto::CartEvent>, tonic::Status> {
    c.watch_carts(WatchCartsRequest::default())
        .await
        .map(|r| r.into_inner())
}

async fn watch_streams_are_capped_per_tenant(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")]);
        c.max_watchers_per_tenant = 2;
    })
    .await;
    let mut a = app.client_with_key(Some("key-a"));
    let cart = create_cart(&mut a, vec![]).await;
    let first = watch_carts(&mut a).await.unwrap();
    let mut second = a
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    crate::helpers::next(&mut second).await;
    for _ in 0..2 {
        assert_error(
            watch_carts(&mut a).await,
            Code::ResourceExhausted,
            "TOO_MANY_WATCHERS",
        );
        assert_error(
            a.watch_cart(WatchCartRequest {
                cart_id: cart.id.clone(),
                after_version: 0,
            })
            .await,
            Code::ResourceExhausted,
            "TOO_MANY_WATCHERS",
        );
    }
    // Another tenant has its own cap.
    let mut other = app.client_with_key(Some("key-b"));
    let _theirs = watch_carts(&mut other).await.unwrap();
    // A stream the client drops frees its slot (no event needed to notice).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    let _third = loop {
        match watch_carts(&mut a).await {
            Ok(s) => break s,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(
                    Instant::now() < deadline,
                    "the dropped stream kept its slot"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Four refusals above, and any while the dropped stream was closing.
    let text = app.metrics.render(None);
    let shed = crate::scopes::metric(
        &text,
        r#"cart_shed_calls_total{tenant="a",reason="TOO_MANY_WATCHERS"}"#,
    );
    assert!(shed >= Some(4), "{text}");
}

both_stores!(watch_streams_are_capped_per_tenant);
