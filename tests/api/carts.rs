//! CreateCart, GetCart, ListCarts, UpdateCart; money and code validation.

use cart_service::proto::{
    self, CartStatus, CreateCartRequest, ListCartsRequest, UpdateCartRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{Backend, assert_error, bad_fields, create_cart, get, item, spawn_app, status},
};

async fn create_then_get_returns_the_whole_cart(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut discounted = item("A", 2, "0.10");
    discounted.list_price = "0.15".into();
    discounted.attributes.insert("size".into(), "L".into());
    let created = c
        .create_cart(CreateCartRequest {
            customer_id: "cust-1".into(),
            reference: "order-1".into(),
            currency: "usd".into(),
            country: "is".into(),
            description: "birthday".into(),
            metadata: [("source".to_string(), "web".to_string())].into(),
            confirmation_type: proto::ConfirmationType::Manual as i32,
            callback_url: "https://shop.example/cb".into(),
            items: vec![discounted, item("B", 1, "0.20")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.version, 1);
    assert_eq!(status(&created), CartStatus::Active);
    assert_eq!(
        (created.currency.as_str(), created.country.as_str()),
        ("USD", "IS")
    );
    assert_eq!(created.channel, "default");
    assert_eq!(created.subtotal, "0.50");
    assert_eq!(created.total, "0.40");
    assert_eq!(created.discount_total, "0.10");
    assert_eq!(created.item_quantity, 3);
    assert_eq!(created.items[0].line_total, "0.20");
    assert_eq!(created.items[0].attributes["size"], "L");
    assert!(created.expires_at.is_some());
    assert_eq!(get(&mut c, &created.id).await, created);
}

async fn money_is_exact(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "0.10"), item("B", 1, "0.20")]).await;
    assert_eq!(cart.total, "0.30");
    let isk = c
        .create_cart(CreateCartRequest {
            currency: "ISK".into(),
            items: vec![item("A", 3, "1500")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(isk.total, "4500");
    let bhd = c
        .create_cart(CreateCartRequest {
            currency: "BHD".into(),
            items: vec![item("A", 1, "1.005")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bhd.total, "1.005");
}

async fn amounts_finer_than_the_currency_are_invalid_amount(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    for (currency, price) in [
        ("USD", "1.005"),
        ("ISK", "10.5"),
        ("USD", "-1"),
        ("USD", "1e400"),
        ("USD", "NaN"),
    ] {
        let r = c
            .create_cart(CreateCartRequest {
                currency: currency.into(),
                items: vec![item("A", 1, price)],
                ..Default::default()
            })
            .await;
        let s = assert_error(r, Code::InvalidArgument, "INVALID_AMOUNT");
        assert_eq!(
            bad_fields(&s),
            ["items[0].unit_price"],
            "{currency} {price}"
        );
    }
    // Also when the cart exists already and the currency comes from it.
    let isk = c
        .create_cart(CreateCartRequest {
            currency: "ISK".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = c
        .add_items(proto::AddItemsRequest {
            cart_id: isk.id,
            items: vec![item("A", 1, "10.5")],
            ..Default::default()
        })
        .await;
    let s = assert_error(r, Code::InvalidArgument, "INVALID_AMOUNT");
    assert_eq!(bad_fields(&s), ["items[0].unit_price"]);
}

async fn unknown_currency_and_country_are_refused(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    for code in ["XXX", "ABC", "US"] {
        let r = c
            .create_cart(CreateCartRequest {
                currency: code.into(),
                ..Default::default()
            })
            .await;
        let s = assert_error(r, Code::InvalidArgument, "INVALID_CURRENCY");
        assert_eq!(bad_fields(&s), ["currency"]);
    }
    let r = c
        .create_cart(CreateCartRequest {
            country: "ZZ".into(),
            ..Default::default()
        })
        .await;
    let s = assert_error(r, Code::InvalidArgument, "INVALID_COUNTRY");
    assert_eq!(bad_fields(&s), ["country"]);
}

async fn a_cart_without_currency_takes_the_default(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = c
        .create_cart(CreateCartRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cart.currency, "USD");
    assert_eq!(cart.total, "0.00");
}

async fn bad_strings_name_their_field(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let r = c
        .create_cart(CreateCartRequest {
            description: "x".repeat(100_000),
            callback_url: "ftp://nope".into(),
            customer_id: "bell\u{7}".into(),
            ..Default::default()
        })
        .await;
    let s = assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let mut fields = bad_fields(&s);
    fields.sort();
    assert_eq!(fields, ["callback_url", "customer_id", "description"]);
}

async fn unknown_and_malformed_ids(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let r = c
        .get_cart(proto::GetCartRequest {
            cart_id: uuid::Uuid::new_v4().to_string(),
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");
    for bad in ["", "not-a-uuid"] {
        let r = c
            .get_cart(proto::GetCartRequest {
                cart_id: bad.into(),
            })
            .await;
        let s = assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(bad_fields(&s), ["cart_id"]);
    }
}

async fn a_reference_is_unique_per_tenant(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let req = CreateCartRequest {
        reference: "order-7".into(),
        items: vec![item("A", 1, "1.00")],
        ..Default::default()
    };
    let first = c.create_cart(req.clone()).await.unwrap().into_inner();
    let again = c.create_cart(req.clone()).await.unwrap().into_inner();
    assert_eq!(again.id, first.id, "the same request answers the same cart");
    let other = CreateCartRequest {
        items: vec![item("A", 2, "1.00")],
        ..req
    };
    assert_error(
        c.create_cart(other).await,
        Code::AlreadyExists,
        "REFERENCE_TAKEN",
    );
}

async fn list_pages_newest_first_and_filters(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let cart = c
            .create_cart(CreateCartRequest {
                customer_id: if i % 2 == 0 {
                    "even".into()
                } else {
                    "odd".into()
                },
                items: vec![item("A", 1, "1")],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(cart.id);
    }
    crate::helpers::submit(&mut c, &ids[4]).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_carts(ListCartsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.carts.len() <= 2);
        seen.extend(page.carts.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "every cart once, newest first");

    let evens = c
        .list_carts(ListCartsRequest {
            customer_id: "even".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(evens.carts.len(), 3);
    let awaiting = c
        .list_carts(ListCartsRequest {
            statuses: vec![CartStatus::AwaitingCustomer as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(awaiting.carts.len(), 1);
    assert_eq!(awaiting.carts[0].id, ids[0]);

    for bad in [
        ListCartsRequest {
            page_size: -1,
            ..Default::default()
        },
        ListCartsRequest {
            page_size: 1000,
            ..Default::default()
        },
        ListCartsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
        ListCartsRequest {
            statuses: vec![99],
            ..Default::default()
        },
    ] {
        assert_error(
            c.list_carts(bad).await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
    }
}

async fn update_changes_details_of_active_carts_only(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    let updated = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id.clone(),
            customer_id: Some("cust-9".into()),
            country: Some("DE".into()),
            description: Some("gift".into()),
            metadata: [("k".to_string(), "v".to_string())].into(),
            expected_version: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 2);
    assert_eq!(
        (updated.customer_id.as_str(), updated.country.as_str()),
        ("cust-9", "DE")
    );
    assert_eq!(updated.metadata["k"], "v");
    assert_eq!(updated.items, cart.items);

    let cleared = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id.clone(),
            clear_metadata: true,
            country: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.metadata.is_empty());
    assert_eq!(cleared.country, "");

    let r = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id.clone(),
            country: Some("XX".into()),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_COUNTRY");
    let r = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id.clone(),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");

    crate::helpers::submit(&mut c, &cart.id).await;
    let r = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id.clone(),
            description: Some("late".into()),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::FailedPrecondition, "CART_NOT_EDITABLE");
}

both_stores!(
    create_then_get_returns_the_whole_cart,
    money_is_exact,
    amounts_finer_than_the_currency_are_invalid_amount,
    unknown_currency_and_country_are_refused,
    a_cart_without_currency_takes_the_default,
    bad_strings_name_their_field,
    unknown_and_malformed_ids,
    a_reference_is_unique_per_tenant,
    list_pages_newest_first_and_filters,
    update_changes_details_of_active_carts_only,
);
