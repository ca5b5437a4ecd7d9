//! The status machine through SubmitCart, ConfirmCart and CancelCart.

use cart_service::proto::{
    self, Actor, AddItemsRequest, CartStatus, ConfirmCartRequest, ConfirmationType,
    CreateCartRequest, SubmitCartRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, assert_error, cancel, confirm, create_cart, item, spawn_app, status,
        submit,
    },
};

async fn submitted(c: &mut Client, kind: ConfirmationType) -> proto::Cart {
    let cart = c
        .create_cart(CreateCartRequest {
            confirmation_type: kind as i32,
            items: vec![item("A", 2, "4.50")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cart = submit(c, &cart.id).await;
    assert_eq!(status(&cart), CartStatus::AwaitingCustomer);
    cart
}

async fn automatic_and_server_callback_carts_confirm_on_the_customer(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    for kind in [
        ConfirmationType::Automatic,
        ConfirmationType::ServerCallback,
        ConfirmationType::Unspecified,
    ] {
        let cart = submitted(&mut c, kind).await;
        assert_error(
            confirm(&mut c, &cart.id, Actor::Provider).await,
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
        );
        let done = confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
        assert_eq!(status(&done), CartStatus::Confirmed);
        assert_eq!(done.version, cart.version + 1);
        assert!(done.expires_at.is_none());
    }
}

async fn manual_carts_wait_for_the_provider(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = submitted(&mut c, ConfirmationType::Manual).await;
    let waiting = confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    assert_eq!(status(&waiting), CartStatus::AwaitingProvider);
    assert_error(
        confirm(&mut c, &cart.id, Actor::Customer).await,
        Code::FailedPrecondition,
        "INVALID_TRANSITION",
    );
    let done = confirm(&mut c, &cart.id, Actor::Provider).await.unwrap();
    assert_eq!(status(&done), CartStatus::Confirmed);
}

async fn cancel_from_every_open_status(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let active = create_cart(&mut c, vec![]).await;
    let awaiting_customer = submitted(&mut c, ConfirmationType::Automatic).await;
    let awaiting_provider = submitted(&mut c, ConfirmationType::Manual).await;
    confirm(&mut c, &awaiting_provider.id, Actor::Customer)
        .await
        .unwrap();
    for cart in [active, awaiting_customer, awaiting_provider] {
        let cancelled = cancel(&mut c, &cart.id).await.unwrap();
        assert_eq!(status(&cancelled), CartStatus::Cancelled);
        assert_eq!(cancelled.cancel_reason, "changed my mind");
    }
}

async fn submit_rules(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let empty = create_cart(&mut c, vec![]).await;
    let r = c
        .submit_cart(SubmitCartRequest {
            cart_id: empty.id.clone(),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::FailedPrecondition, "CART_EMPTY");

    let cart = create_cart(&mut c, vec![item("A", 3, "0.10")]).await;
    let with_total = |t: &str| SubmitCartRequest {
        cart_id: cart.id.clone(),
        expected_total: t.into(),
        ..Default::default()
    };
    let s = assert_error(
        c.submit_cart(with_total("0.31")).await,
        Code::FailedPrecondition,
        "TOTAL_MISMATCH",
    );
    assert!(s.message().contains("0.30"), "{}", s.message());
    assert_error(
        c.submit_cart(with_total("abc")).await,
        Code::InvalidArgument,
        "INVALID_AMOUNT",
    );
    let done = c
        .submit_cart(with_total("0.30"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&done), CartStatus::AwaitingCustomer);
    assert_error(
        c.submit_cart(with_total("0.30")).await,
        Code::FailedPrecondition,
        "INVALID_TRANSITION",
    );

    let r = c
        .add_items(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("B", 1, "1")],
            ..Default::default()
        })
        .await;
    assert_error(r, Code::FailedPrecondition, "CART_NOT_EDITABLE");
    let r = c
        .confirm_cart(ConfirmCartRequest {
            cart_id: cart.id.clone(),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
}

/// CONFIRMED, CANCELLED and MERGED (EXPIRED is covered with the sweeper)
/// refuse every change and keep their version.
async fn final_statuses_refuse_every_change(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let confirmed = submitted(&mut c, ConfirmationType::Automatic).await;
    confirm(&mut c, &confirmed.id, Actor::Customer)
        .await
        .unwrap();
    let cancelled = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    cancel(&mut c, &cancelled.id).await.unwrap();
    let merged = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    let target = create_cart(&mut c, vec![]).await;
    c.merge_carts(proto::MergeCartsRequest {
        source_cart_id: merged.id.clone(),
        target_cart_id: target.id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    for id in [&confirmed.id, &cancelled.id, &merged.id] {
        let before = crate::helpers::get(&mut c, id).await;
        assert!(matches!(
            status(&before),
            CartStatus::Confirmed | CartStatus::Cancelled | CartStatus::Merged
        ));
        let r = c
            .add_items(AddItemsRequest {
                cart_id: id.clone(),
                items: vec![item("B", 1, "1")],
                ..Default::default()
            })
            .await;
        assert_error(r, Code::FailedPrecondition, "CART_NOT_EDITABLE");
        assert_error(
            cancel(&mut c, id).await,
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
        );
        assert_error(
            confirm(&mut c, id, Actor::Provider).await,
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
        );
        assert_error(
            confirm(&mut c, id, Actor::Customer).await,
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
        );
        let r = c
            .submit_cart(SubmitCartRequest {
                cart_id: id.clone(),
                ..Default::default()
            })
            .await;
        assert_error(r, Code::FailedPrecondition, "INVALID_TRANSITION");
        assert_eq!(
            crate::helpers::get(&mut c, id).await,
            before,
            "nothing changed"
        );
    }
}

both_stores!(
    automatic_and_server_callback_carts_confirm_on_the_customer,
    manual_carts_wait_for_the_provider,
    cancel_from_every_open_status,
    submit_rules,
    final_statuses_refuse_every_change,
);
