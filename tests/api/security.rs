//! Security: tenant isolation on every RPC, SQL-looking input stored and
//! answered verbatim, and a graceful shutdown that ends streams cleanly.

use std::time::Duration;

use cart_service::proto::{
    self, AddItemsRequest, ClearCartRequest, CreateCartRequest, GetCartRequest, ListCartsRequest,
    MergeCartsRequest, RemoveItemsRequest, SetItemsRequest, SubmitCartRequest, UpdateCartRequest,
    WatchCartRequest, WatchCartsRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, assert_error, cancel, confirm, create_cart, get, item, keys, next, spawn_app,
        spawn_app_with,
    },
};

async fn another_tenants_cart_is_not_found_on_every_rpc(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")])).await;
    let mut a = app.client_with_key(Some("key-a"));
    let mut other = app.client_with_key(Some("key-b"));
    let theirs = create_cart(&mut a, vec![item("A", 1, "1")]).await;
    let mine = create_cart(&mut other, vec![]).await;
    let id = || theirs.id.clone();
    let nf = "CART_NOT_FOUND";
    assert_error(
        other.get_cart(GetCartRequest { cart_id: id() }).await,
        Code::NotFound,
        nf,
    );
    let add = AddItemsRequest {
        cart_id: id(),
        items: vec![item("X", 1, "1")],
        ..Default::default()
    };
    assert_error(other.add_items(add).await, Code::NotFound, nf);
    let set = SetItemsRequest {
        cart_id: id(),
        items: vec![item("X", 1, "1")],
        ..Default::default()
    };
    assert_error(other.set_items(set).await, Code::NotFound, nf);
    let remove = RemoveItemsRequest {
        cart_id: id(),
        skus: vec!["A".into()],
        ..Default::default()
    };
    assert_error(other.remove_items(remove).await, Code::NotFound, nf);
    assert_error(
        other
            .clear_cart(ClearCartRequest {
                cart_id: id(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        nf,
    );
    let update = UpdateCartRequest {
        cart_id: id(),
        description: Some("x".into()),
        ..Default::default()
    };
    assert_error(other.update_cart(update).await, Code::NotFound, nf);
    for (source, target) in [(id(), mine.id.clone()), (mine.id.clone(), id())] {
        let merge = MergeCartsRequest {
            source_cart_id: source,
            target_cart_id: target,
            ..Default::default()
        };
        assert_error(other.merge_carts(merge).await, Code::NotFound, nf);
    }
    assert_error(
        other
            .submit_cart(SubmitCartRequest {
                cart_id: id(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        nf,
    );
    assert_error(
        confirm(&mut other, &id(), proto::Actor::Customer).await,
        Code::NotFound,
        nf,
    );
    assert_error(cancel(&mut other, &id()).await, Code::NotFound, nf);
    assert_error(
        other
            .watch_cart(WatchCartRequest {
                cart_id: id(),
                after_version: 0,
            })
            .await,
        Code::NotFound,
        nf,
    );
    let listed = other
        .list_carts(ListCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.carts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [mine.id.as_str()]);

    // B's tenant stream never carries A's events.
    let mut stream = other
        .watch_carts(WatchCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    a.add_items(AddItemsRequest {
        cart_id: id(),
        items: vec![item("B", 1, "1")],
        ..Default::default()
    })
    .await
    .unwrap();
    other
        .add_items(AddItemsRequest {
            cart_id: mine.id.clone(),
            items: vec![item("M", 1, "1")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next(&mut stream).await.cart_id,
        mine.id,
        "only B's own change"
    );
    assert_eq!(
        get(&mut a, &theirs.id).await.version,
        2,
        "B changed nothing of A's"
    );
}

async fn sql_looking_input_is_stored_verbatim(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let evil = "x'); DROP TABLE carts; --";
    let quoted = "Robert'); DELETE FROM cart_events WHERE ('1'='1";
    let mut line = item("SKU';--", 2, "1.00");
    line.name = evil.into();
    line.attributes.insert(quoted.into(), evil.into());
    let cart = c
        .create_cart(CreateCartRequest {
            customer_id: quoted.into(),
            reference: evil.into(),
            channel: "c' OR '1'='1".into(),
            description: evil.into(),
            metadata: [(evil.to_string(), quoted.to_string())].into(),
            items: vec![line],
            request_id: quoted.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let back = get(&mut c, &cart.id).await;
    assert_eq!(back, cart);
    assert_eq!(
        (back.customer_id.as_str(), back.reference.as_str()),
        (quoted, evil)
    );
    assert_eq!(back.items[0].sku, "SKU';--");
    assert_eq!(back.metadata[evil], quoted);
    let listed = c
        .list_carts(ListCartsRequest {
            customer_id: quoted.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.carts.len(),
        1,
        "the filter matched the literal value"
    );
    let cancelled = c
        .cancel_cart(proto::CancelCartRequest {
            cart_id: cart.id.clone(),
            reason: evil.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.cancel_reason, evil);
    // Everything is still there.
    assert_eq!(get(&mut c, &cart.id).await.version, 2);
    create_cart(&mut c, vec![]).await;
}

/// In-flight calls finish and watch streams end with a clean status when
/// the server shuts down.
async fn shutdown_ends_streams_cleanly(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let mut cart_stream = c
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut cart_stream).await;
    let mut tenant_stream = c
        .watch_carts(WatchCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stopped = tokio::spawn(app.shut_down());
    for s in [&mut cart_stream, &mut tenant_stream] {
        let end = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("the stream ends promptly");
        assert!(matches!(end, Ok(None)), "a clean end, got {end:?}");
    }
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the server stops promptly")
        .unwrap();
    let after = c.get_cart(GetCartRequest { cart_id: cart.id }).await;
    assert!(after.is_err(), "nothing answers after shutdown");
}

both_stores!(
    another_tenants_cart_is_not_found_on_every_rpc,
    sql_looking_input_is_stored_verbatim,
    shutdown_ends_streams_cleanly,
);
