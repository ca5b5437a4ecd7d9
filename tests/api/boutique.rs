//! `hipstershop.CartService` (Online Boutique's cart API), driven with a
//! client generated from proto/hipstershop/demo.proto, seen through cart.v1.

use cart_service::{
    hipstershop::{
        AddItemRequest, CartItem, EmptyCartRequest, GetCartRequest,
        cart_service_client::CartServiceClient,
    },
    proto::{self, ListCartsRequest},
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};

use crate::{
    both_stores,
    helpers::{Backend, TestApp, assert_error, keys, spawn_app, spawn_app_with, submit},
};

type Boutique = CartServiceClient<Channel>;

async fn add(c: &mut Boutique, user: &str, product: &str, quantity: i32) {
    c.add_item(AddItemRequest {
        user_id: user.into(),
        item: Some(CartItem {
            product_id: product.into(),
            quantity,
        }),
    })
    .await
    .expect("add item");
}

async fn lines(c: &mut Boutique, user: &str) -> Vec<(String, i32)> {
    let cart = c
        .get_cart(GetCartRequest {
            user_id: user.into(),
        })
        .await
        .expect("get cart")
        .into_inner();
    assert_eq!(cart.user_id, user);
    cart.items
        .into_iter()
        .map(|i| (i.product_id, i.quantity))
        .collect()
}

/// The user's carts as cart.v1 lists them, newest first.
async fn carts_of(app: &TestApp, user: &str) -> Vec<proto::Cart> {
    app.client
        .clone()
        .list_carts(ListCartsRequest {
            customer_id: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .carts
}

fn line(product: &str, quantity: i32) -> (String, i32) {
    (product.to_string(), quantity)
}

async fn add_sums_quantities_and_empty_clears_the_same_cart(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = Boutique::new(app.channel());
    assert!(lines(&mut c, "user-1").await.is_empty(), "no cart yet");
    assert!(
        carts_of(&app, "user-1").await.is_empty(),
        "GetCart creates nothing"
    );

    add(&mut c, "user-1", "OLJCESPC7Z", 2).await;
    add(&mut c, "user-1", "OLJCESPC7Z", 3).await;
    add(&mut c, "user-1", "66VCHSJNUP", 1).await;
    assert_eq!(
        lines(&mut c, "user-1").await,
        [line("OLJCESPC7Z", 5), line("66VCHSJNUP", 1)]
    );

    let carts = carts_of(&app, "user-1").await;
    assert_eq!(carts.len(), 1, "one cart for the user");
    let cart = &carts[0];
    assert_eq!(cart.status(), proto::CartStatus::Active);
    assert_eq!(
        (cart.currency.as_str(), cart.total.as_str()),
        ("USD", "0.00")
    );
    let skus: Vec<_> = cart
        .items
        .iter()
        .map(|i| (i.sku.as_str(), i.quantity))
        .collect();
    assert_eq!(skus, [("OLJCESPC7Z", 5), ("66VCHSJNUP", 1)]);

    c.empty_cart(EmptyCartRequest {
        user_id: "user-1".into(),
    })
    .await
    .unwrap();
    assert!(lines(&mut c, "user-1").await.is_empty());
    let after = carts_of(&app, "user-1").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, cart.id, "the same cart, emptied");
    assert!(after[0].items.is_empty());
    assert!(lines(&mut c, "user-2").await.is_empty(), "users are apart");
}

async fn concurrent_first_adds_fill_one_cart(b: Backend) {
    let app = spawn_app(b).await;
    let n = 12;
    // Several users, each with n racing first adds, to make the race likely.
    for user in ["racer-1", "racer-2", "racer-3"] {
        let calls = (0..n).map(|_| {
            let mut c = Boutique::new(app.channel());
            async move { add(&mut c, user, "SKU", 1).await }
        });
        futures::future::join_all(calls).await;
        let carts = carts_of(&app, user).await;
        assert_eq!(carts.len(), 1, "one cart for {user}, not {}", carts.len());
        assert_eq!(carts[0].items[0].quantity, n);
    }
}

async fn a_checked_out_cart_is_followed_by_a_new_one(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = Boutique::new(app.channel());
    add(&mut c, "u", "A", 1).await;
    let first = carts_of(&app, "u").await.remove(0);
    submit(&mut app.client.clone(), &first.id).await;
    assert!(lines(&mut c, "u").await.is_empty(), "no ACTIVE cart");

    add(&mut c, "u", "B", 2).await;
    assert_eq!(lines(&mut c, "u").await, [line("B", 2)]);
    let carts = carts_of(&app, "u").await;
    assert_eq!(carts.len(), 2);
    assert_ne!(carts[0].id, first.id);
}

async fn bad_requests_are_invalid_argument(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = Boutique::new(app.channel());
    let r = c.get_cart(GetCartRequest::default()).await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let r = c
        .add_item(AddItemRequest {
            user_id: "u".into(),
            item: None,
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let r = c
        .add_item(AddItemRequest {
            user_id: "u".into(),
            item: Some(CartItem {
                product_id: "A".into(),
                quantity: 0,
            }),
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_QUANTITY");
}

async fn api_keys_guard_it_and_pick_the_tenant(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[("shop-a", "key-a"), ("shop-b", "key-b")])
    })
    .await;
    let mut c = Boutique::new(app.channel());
    let r = c
        .get_cart(GetCartRequest {
            user_id: "u".into(),
        })
        .await;
    assert_error(r, Code::Unauthenticated, "UNAUTHENTICATED");

    let mut req = Request::new(AddItemRequest {
        user_id: "u".into(),
        item: Some(CartItem {
            product_id: "A".into(),
            quantity: 1,
        }),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer key-a".parse().unwrap());
    c.add_item(req).await.unwrap();

    let list = |key| {
        let mut v1 = app.client_with_key(Some(key));
        async move {
            v1.list_carts(ListCartsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .carts
        }
    };
    assert_eq!(list("key-a").await.len(), 1);
    assert!(list("key-b").await.is_empty());
}

async fn reflection_and_health_know_it(b: Backend) {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app(b).await;
    let ask = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut answers = ServerReflectionClient::new(app.channel())
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "hipstershop.CartService"),
        "{list:?}"
    );
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "hipstershop.CartService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

both_stores!(
    add_sums_quantities_and_empty_clears_the_same_cart,
    concurrent_first_adds_fill_one_cart,
    a_checked_out_cart_is_followed_by_a_new_one,
    bad_requests_are_invalid_argument,
    api_keys_guard_it_and_pick_the_tenant,
    reflection_and_health_know_it,
);
