//! API keys map to tenants; tenants never see each other's carts.

use cart_service::proto::{AddItemsRequest, GetCartRequest, ListCartsRequest};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, assert_error, create_cart, item, keys, spawn_app_with},
};

async fn tenants_are_isolated(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[("shop-a", "key-a"), ("shop-b", "key-b")])
    })
    .await;
    let mut a = app.client_with_key(Some("key-a"));
    let mut bb = app.client_with_key(Some("key-b"));
    let cart = create_cart(&mut a, vec![item("A", 1, "1")]).await;
    let r = bb
        .get_cart(GetCartRequest {
            cart_id: cart.id.clone(),
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");
    let r = bb
        .add_items(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("X", 1, "1")],
            ..Default::default()
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");
    assert_error(
        crate::helpers::cancel(&mut bb, &cart.id).await,
        Code::NotFound,
        "CART_NOT_FOUND",
    );
    let listed = bb
        .list_carts(ListCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.carts.is_empty());
    let listed = a
        .list_carts(ListCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.carts.len(), 1);
    assert_eq!(
        crate::helpers::get(&mut a, &cart.id).await.items.len(),
        1,
        "B changed nothing"
    );
}

async fn missing_or_wrong_keys_are_unauthenticated(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("shop-a", "key-a")])).await;
    for key in [None, Some("wrong"), Some("")] {
        let mut c = app.client_with_key(key);
        let r = c.list_carts(ListCartsRequest::default()).await;
        assert_error(r, Code::Unauthenticated, "UNAUTHENTICATED");
    }
}

async fn the_same_reference_in_two_tenants_is_two_carts(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[("shop-a", "key-a"), ("shop-b", "key-b")])
    })
    .await;
    let req = cart_service::proto::CreateCartRequest {
        reference: "order-1".into(),
        ..Default::default()
    };
    let a = app
        .client_with_key(Some("key-a"))
        .create_cart(req.clone())
        .await
        .unwrap()
        .into_inner();
    let b = app
        .client_with_key(Some("key-b"))
        .create_cart(req)
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.id, b.id);
}

both_stores!(
    tenants_are_isolated,
    missing_or_wrong_keys_are_unauthenticated,
    the_same_reference_in_two_tenants_is_two_carts,
);
