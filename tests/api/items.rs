//! AddItems, SetItems, RemoveItems, ClearCart and their limits.

use cart_service::proto::{
    AddItemsRequest, ClearCartRequest, ItemInput, RemoveItemsRequest, SetItemsRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, Client, assert_error, bad_fields, create_cart, item, spawn_app},
};

async fn add(
    c: &mut Client,
    id: &str,
    items: Vec<ItemInput>,
) -> Result<cart_service::proto::Cart, tonic::Status> {
    c.add_items(AddItemsRequest {
        cart_id: id.into(),
        items,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn add_items_increments_and_replaces_line_details(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "1.00")]).await;
    let mut again = item("A", 2, "0.90");
    again.name = "renamed".into();
    let cart = add(&mut c, &cart.id, vec![again, item("B", 1, "5.00")])
        .await
        .unwrap();
    assert_eq!(cart.version, 2);
    assert_eq!(cart.items.len(), 2);
    assert_eq!(
        cart.items[0].sku, "A",
        "lines keep the order they were first added in"
    );
    assert_eq!(
        (cart.items[0].quantity, cart.items[0].name.as_str()),
        (3, "renamed")
    );
    assert_eq!(cart.items[0].unit_price, "0.90");
    assert_eq!(cart.total, "7.70");
}

async fn set_items_upserts_and_zero_removes(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 5, "1"), item("B", 1, "1")]).await;
    let cart = c
        .set_items(SetItemsRequest {
            cart_id: cart.id,
            items: vec![item("A", 2, "3"), item("B", 0, "1"), item("C", 1, "1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = cart
        .items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    assert_eq!(got, [("A", 2), ("C", 1)]);
    assert_eq!(cart.total, "7.00");
}

async fn remove_and_clear(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(
        &mut c,
        vec![item("A", 1, "1"), item("B", 1, "1"), item("C", 1, "1")],
    )
    .await;
    let r = c
        .remove_items(RemoveItemsRequest {
            cart_id: cart.id.clone(),
            skus: vec!["A".into(), "Z".into()],
            ..Default::default()
        })
        .await;
    assert_error(r, Code::NotFound, "ITEM_NOT_FOUND");
    let cart = c
        .remove_items(RemoveItemsRequest {
            cart_id: cart.id.clone(),
            skus: vec!["A".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cart.items.len(), 2, "the refused call removed nothing");
    assert_eq!(cart.version, 2);
    let r = c
        .remove_items(RemoveItemsRequest {
            cart_id: cart.id.clone(),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_SKU");
    let cart = c
        .clear_cart(ClearCartRequest {
            cart_id: cart.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cart.items.is_empty());
    assert_eq!((cart.total.as_str(), cart.item_quantity), ("0.00", 0));
}

async fn line_and_quantity_limits(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(
        &mut c,
        (0..500).map(|i| item(&format!("S{i}"), 1, "1")).collect(),
    )
    .await;
    assert_eq!(cart.items.len(), 500);
    assert_error(
        add(&mut c, &cart.id, vec![item("X", 1, "1")]).await,
        Code::FailedPrecondition,
        "TOO_MANY_ITEMS",
    );
    let r = add(
        &mut c,
        &cart.id,
        (0..501).map(|i| item(&format!("N{i}"), 1, "1")).collect(),
    )
    .await;
    assert_error(r, Code::InvalidArgument, "TOO_MANY_ITEMS");

    for q in [0, -1, 100_001, i32::MAX, i32::MIN] {
        let s = assert_error(
            add(&mut c, &cart.id, vec![item("S1", q, "1")]).await,
            Code::InvalidArgument,
            "INVALID_QUANTITY",
        );
        assert_eq!(bad_fields(&s), ["items[0].quantity"]);
    }
    let s = assert_error(
        add(&mut c, &cart.id, vec![item("S1", 100_000, "1")]).await,
        Code::InvalidArgument,
        "INVALID_QUANTITY",
    );
    assert_eq!(
        bad_fields(&s),
        ["items[0].quantity"],
        "1 + 100000 is over the cap"
    );
    let r = c
        .set_items(SetItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("S1", -1, "1")],
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_QUANTITY");
}

async fn skus_and_prices_are_checked(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    for sku in ["", "has space", &"x".repeat(129), "tab\t"] {
        let s = assert_error(
            add(&mut c, &cart.id, vec![item(sku, 1, "1")]).await,
            Code::InvalidArgument,
            "INVALID_SKU",
        );
        assert_eq!(bad_fields(&s), ["items[0].sku"]);
    }
    let mut below = item("A", 1, "2.00");
    below.list_price = "1.00".into();
    let s = assert_error(
        add(&mut c, &cart.id, vec![item("OK", 1, "1"), below]).await,
        Code::InvalidArgument,
        "INVALID_AMOUNT",
    );
    assert_eq!(bad_fields(&s), ["items[1].list_price"]);
    assert_error(
        add(&mut c, &cart.id, vec![]).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let big = add(
        &mut c,
        &cart.id,
        vec![item("MAX", 100_000, "1000000000000")],
    )
    .await
    .unwrap();
    assert_eq!(big.total, "100000000000000000.00");
    assert_error(
        add(&mut c, &cart.id, vec![item("B", 1, "1000000000000.01")]).await,
        Code::InvalidArgument,
        "INVALID_AMOUNT",
    );
}

async fn expected_version_mismatch_is_aborted(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let r = c
        .add_items(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("A", 1, "1")],
            expected_version: 5,
            ..Default::default()
        })
        .await;
    assert_error(r, Code::Aborted, "VERSION_MISMATCH");
    let ok = c
        .add_items(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("A", 1, "1")],
            expected_version: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.version, 2);
    let r = c
        .clear_cart(ClearCartRequest {
            cart_id: cart.id.clone(),
            expected_version: -3,
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
}

async fn changes_to_an_unknown_cart_are_not_found(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let id = uuid::Uuid::new_v4().to_string();
    assert_error(
        add(&mut c, &id, vec![item("A", 1, "1")]).await,
        Code::NotFound,
        "CART_NOT_FOUND",
    );
    let r = c
        .clear_cart(ClearCartRequest {
            cart_id: id,
            ..Default::default()
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");
}

both_stores!(
    add_items_increments_and_replaces_line_details,
    set_items_upserts_and_zero_removes,
    remove_and_clear,
    line_and_quantity_limits,
    skus_and_prices_are_checked,
    expected_version_mismatch_is_aborted,
    changes_to_an_unknown_cart_are_not_found,
);
