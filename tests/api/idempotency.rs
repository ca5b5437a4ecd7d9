//! request_id: a repeat answers the first result and applies nothing twice.

use cart_service::proto::{
    AddItemsRequest, CreateCartRequest, MergeCartsRequest, SubmitCartRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, assert_error, bad_fields, create_cart, get, item, spawn_app},
};

async fn a_repeated_request_answers_the_first_result(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let req = AddItemsRequest {
        cart_id: cart.id.clone(),
        items: vec![item("A", 1, "2.50")],
        request_id: "add-1".into(),
        ..Default::default()
    };
    let first = c.add_items(req.clone()).await.unwrap().into_inner();
    let second = c.add_items(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, second);
    assert_eq!(first.items[0].quantity, 1);
    let now = get(&mut c, &cart.id).await;
    assert_eq!((now.version, now.items[0].quantity), (2, 1), "applied once");

    // The key answers its first result even after later changes.
    c.add_items(AddItemsRequest {
        request_id: "add-2".into(),
        ..req.clone()
    })
    .await
    .unwrap();
    let replay = c.add_items(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay, first);
    assert_eq!(get(&mut c, &cart.id).await.items[0].quantity, 2);
}

async fn a_key_reused_for_another_request_is_refused(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    c.add_items(AddItemsRequest {
        cart_id: cart.id.clone(),
        items: vec![item("A", 1, "1")],
        request_id: "k".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c
        .add_items(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("A", 5, "1")],
            request_id: "k".into(),
            ..Default::default()
        })
        .await;
    let s = assert_error(r, Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(bad_fields(&s), ["request_id"]);
    let r = c
        .submit_cart(SubmitCartRequest {
            cart_id: cart.id.clone(),
            request_id: "k".into(),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(get(&mut c, &cart.id).await.version, 2);
}

async fn create_and_merge_are_idempotent_too(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let req = CreateCartRequest {
        items: vec![item("A", 1, "1")],
        request_id: "create-1".into(),
        ..Default::default()
    };
    let first = c.create_cart(req.clone()).await.unwrap().into_inner();
    let again = c.create_cart(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, again);
    let listed = c
        .list_carts(cart_service::proto::ListCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.carts.len(), 1, "one cart made");

    let target = create_cart(&mut c, vec![]).await;
    let merge = MergeCartsRequest {
        source_cart_id: first.id.clone(),
        target_cart_id: target.id.clone(),
        request_id: "merge-1".into(),
        ..Default::default()
    };
    let merged = c.merge_carts(merge.clone()).await.unwrap().into_inner();
    assert_eq!(c.merge_carts(merge).await.unwrap().into_inner(), merged);
    assert_eq!(get(&mut c, &target.id).await.items[0].quantity, 1);
}

async fn concurrent_repeats_apply_once(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let req = AddItemsRequest {
        cart_id: cart.id.clone(),
        items: vec![item("A", 1, "1")],
        request_id: "same".into(),
        ..Default::default()
    };
    let calls = (0..10).map(|_| {
        let mut c = c.clone();
        let req = req.clone();
        tokio::spawn(async move { c.add_items(req).await.map(|r| r.into_inner()) })
    });
    let results = futures::future::join_all(calls).await;
    for r in results {
        let cart = r.unwrap().expect("every repeat succeeds");
        assert_eq!(cart.version, 2);
    }
    assert_eq!(get(&mut c, &cart.id).await.items[0].quantity, 1);
}

both_stores!(
    a_repeated_request_answers_the_first_result,
    a_key_reused_for_another_request_is_refused,
    create_and_merge_are_idempotent_too,
    concurrent_repeats_apply_once,
);

/// Keys past the 24-hour window are forgotten by the sweeper's purge, and
/// the key can then name a new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_past_the_window_are_forgotten() {
    let db = crate::helpers::fresh_database().await;
    let app = crate::helpers::spawn_app_on(&db, |_| {}).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let add = |qty| AddItemsRequest {
        cart_id: cart.id.clone(),
        items: vec![item("A", qty, "1")],
        request_id: "old-key".into(),
        ..Default::default()
    };
    c.add_items(add(1)).await.unwrap();
    assert_eq!(
        app.housekeeping.forget_old_keys(100).await.unwrap(),
        0,
        "a fresh key stays"
    );

    let (sql, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    sql.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(app.housekeeping.forget_old_keys(100).await.unwrap(), 1);
    let again = c.add_items(add(2)).await.unwrap().into_inner();
    assert_eq!(again.items[0].quantity, 3, "the key named a new request");
}
