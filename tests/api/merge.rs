//! MergeCarts with both strategies.

use cart_service::proto::{self, CartStatus, CreateCartRequest, MergeCartsRequest, MergeStrategy};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, Client, assert_error, create_cart, get, item, spawn_app, status},
};

async fn owned(c: &mut Client, customer: &str, items: Vec<proto::ItemInput>) -> proto::Cart {
    c.create_cart(CreateCartRequest {
        customer_id: customer.into(),
        items,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn combine_items_moves_lines_into_the_target(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let anonymous = create_cart(&mut c, vec![item("A", 2, "1.00"), item("B", 1, "2.00")]).await;
    let customers = owned(&mut c, "cust-1", vec![item("A", 1, "1.00")]).await;
    let merged = c
        .merge_carts(MergeCartsRequest {
            source_cart_id: anonymous.id.clone(),
            target_cart_id: customers.id.clone(),
            customer_id: "cust-1".into(),
            strategy: MergeStrategy::CombineItems as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.id, customers.id);
    let got: Vec<_> = merged
        .items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    assert_eq!(got, [("A", 3), ("B", 1)]);
    assert_eq!(merged.total, "5.00");
    assert_eq!(merged.version, 2);
    let source = get(&mut c, &anonymous.id).await;
    assert_eq!(status(&source), CartStatus::Merged);
    assert_eq!(source.merged_into_cart_id, customers.id);
    assert_eq!(source.version, 2);
}

async fn keep_source_hands_the_cart_over(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let anonymous = create_cart(&mut c, vec![item("A", 2, "1.00")]).await;
    let old = owned(&mut c, "cust-1", vec![item("Z", 1, "9.00")]).await;
    let kept = c
        .merge_carts(MergeCartsRequest {
            source_cart_id: anonymous.id.clone(),
            target_cart_id: old.id.clone(),
            customer_id: "cust-1".into(),
            strategy: MergeStrategy::KeepSource as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.id, anonymous.id);
    assert_eq!(kept.customer_id, "cust-1");
    assert_eq!(kept.items.len(), 1);
    let old = get(&mut c, &old.id).await;
    assert_eq!(status(&old), CartStatus::Merged);
    assert_eq!(old.merged_into_cart_id, anonymous.id);

    // Without a target the source is only handed over.
    let another = create_cart(&mut c, vec![]).await;
    let kept = c
        .merge_carts(MergeCartsRequest {
            source_cart_id: another.id.clone(),
            customer_id: "cust-2".into(),
            strategy: MergeStrategy::KeepSource as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((kept.customer_id.as_str(), kept.version), ("cust-2", 2));
}

async fn merge_refusals(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let source = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    let theirs = owned(&mut c, "someone-else", vec![]).await;
    let req = |target: &str, strategy: MergeStrategy| MergeCartsRequest {
        source_cart_id: source.id.clone(),
        target_cart_id: target.into(),
        customer_id: "cust-1".into(),
        strategy: strategy as i32,
        ..Default::default()
    };
    for s in [MergeStrategy::CombineItems, MergeStrategy::KeepSource] {
        assert_error(
            c.merge_carts(req(&theirs.id, s)).await,
            Code::FailedPrecondition,
            "CUSTOMER_MISMATCH",
        );
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(
        c.merge_carts(req(&unknown, MergeStrategy::CombineItems))
            .await,
        Code::NotFound,
        "CART_NOT_FOUND",
    );
    assert_error(
        c.merge_carts(req(&source.id, MergeStrategy::CombineItems))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_error(
        c.merge_carts(req("", MergeStrategy::CombineItems)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let mut bad_strategy = req(&theirs.id, MergeStrategy::CombineItems);
    bad_strategy.strategy = 42;
    assert_error(
        c.merge_carts(bad_strategy).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let eur = c
        .create_cart(CreateCartRequest {
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error(
        c.merge_carts(req(&eur.id, MergeStrategy::CombineItems))
            .await,
        Code::FailedPrecondition,
        "INVALID_CURRENCY",
    );
    let mut stale = req(&eur.id, MergeStrategy::KeepSource);
    stale.expected_version = 9;
    assert_error(
        c.merge_carts(stale).await,
        Code::Aborted,
        "VERSION_MISMATCH",
    );
    assert_eq!(
        get(&mut c, &source.id).await,
        source,
        "refused merges change nothing"
    );
}

both_stores!(
    combine_items_moves_lines_into_the_target,
    keep_source_hands_the_cart_over,
    merge_refusals,
);
