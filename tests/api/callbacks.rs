//! Callbacks: signed POSTs on confirm and cancel, retried with backoff,
//! delivered at least once (once in the normal case) across instances.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use cart_service::{
    config::{Backoff, Config, Pairs},
    domain::TenantId,
    ports::DeliveryState,
    proto::{self, Actor, ConfirmationType, CreateCartRequest, UpdateCartRequest},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, TestApp, assert_error, cancel, confirm, fresh_database, item,
        spawn_app_on, spawn_app_with, submit,
    },
    receiver::Receiver,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn fast(c: &mut Config) {
    c.callback_secrets = Some(Pairs(vec![("default".into(), SECRET.into())]));
    c.callback_timeout = Duration::from_millis(500);
    c.callback_backoff = Backoff(vec![Duration::from_millis(100), Duration::from_millis(100)]);
}

async fn cart_with(c: &mut Client, kind: ConfirmationType, ok: &str, cancel: &str) -> proto::Cart {
    c.create_cart(CreateCartRequest {
        reference: "order-1".into(),
        confirmation_type: kind as i32,
        callback_url: ok.into(),
        callback_cancel_url: cancel.into(),
        items: vec![item("A", 2, "4.50")],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn deliveries(app: &TestApp, cart: &str) -> Vec<DeliveryState> {
    app.store
        .callbacks_of(&TenantId("default".into()), cart.parse().unwrap())
        .await
        .unwrap()
}

/// Waits until the cart's callbacks are all settled (delivered or failed).
async fn settled(app: &TestApp, cart: &str) -> Vec<DeliveryState> {
    let start = std::time::Instant::now();
    loop {
        let d = deliveries(app, cart).await;
        if !d.is_empty() && d.iter().all(|d| d.state != "pending") {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "callbacks never settled: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(r: &crate::receiver::Received) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = r.header("webhook-signature").expect("webhook-signature");
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "signature verifies with the tenant's secret");
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "fresh timestamp");
}

async fn a_confirmed_cart_calls_back_once_signed(b: Backend) {
    let rx = Receiver::start(&[]).await;
    let app = spawn_app_with(b, fast).await;
    let mut c = app.client.clone();
    let cart = cart_with(
        &mut c,
        ConfirmationType::Automatic,
        &rx.url("/ok"),
        &rx.url("/cancel"),
    )
    .await;
    submit(&mut c, &cart.id).await;
    confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/ok");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    verify(&got[0]);
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["cart_id"], cart.id.as_str());
    assert_eq!(body["reference"], "order-1");
    assert_eq!(body["status"], "CART_STATUS_CONFIRMED");
    assert_eq!(
        (body["total"].as_str(), body["currency"].as_str()),
        (Some("9.00"), Some("USD"))
    );
    assert_eq!(body["version"], 3);
    assert!(body["occurred_at"].is_string());
    let d = settled(&app, &cart.id).await;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].state.as_str(), d[0].attempts, d[0].last_status),
        ("delivered", 1, Some(200))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.received().len(), 1, "exactly one POST");
}

async fn retries_until_200(b: Backend) {
    let rx = Receiver::start(&[500, 500]).await;
    let app = spawn_app_with(b, fast).await;
    let mut c = app.client.clone();
    let cart = cart_with(&mut c, ConfirmationType::Automatic, &rx.url("/ok"), "").await;
    submit(&mut c, &cart.id).await;
    confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    let d = settled(&app, &cart.id).await;
    assert_eq!(
        (d[0].state.as_str(), d[0].attempts, d[0].last_status),
        ("delivered", 3, Some(200))
    );
    let got = rx.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "the same webhook-id on every attempt"
    );
}

async fn gives_up_after_the_configured_attempts(b: Backend) {
    let rx = Receiver::always(503).await;
    let app = spawn_app_with(b, fast).await;
    let mut c = app.client.clone();
    let cart = cart_with(&mut c, ConfirmationType::Automatic, "", &rx.url("/cancel")).await;
    cancel(&mut c, &cart.id).await.unwrap();
    let d = settled(&app, &cart.id).await;
    assert_eq!(
        (d[0].state.as_str(), d[0].attempts, d[0].last_status),
        ("failed", 3, Some(503))
    );
    assert!(d[0].last_error.as_deref().unwrap_or("").contains("503"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.received().len(), 3, "no attempt after giving up");
}

async fn manual_carts_call_back_only_when_the_provider_confirms(b: Backend) {
    let rx = Receiver::start(&[]).await;
    let app = spawn_app_with(b, fast).await;
    let mut c = app.client.clone();
    let cart = cart_with(
        &mut c,
        ConfirmationType::Manual,
        &rx.url("/ok"),
        &rx.url("/cancel"),
    )
    .await;
    submit(&mut c, &cart.id).await;
    confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        rx.received().is_empty(),
        "nothing until the provider confirms"
    );
    assert!(deliveries(&app, &cart.id).await.is_empty());
    confirm(&mut c, &cart.id, Actor::Provider).await.unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/ok");
}

async fn only_http_urls_and_allowed_hosts(b: Backend) {
    let app = spawn_app_with(b, |c| c.callback_hosts = Some(vec!["pay.example".into()])).await;
    let mut c = app.client.clone();
    for url in [
        "ftp://pay.example/x",
        "javascript:alert(1)",
        "https://other.example/cb",
    ] {
        let r = c
            .create_cart(CreateCartRequest {
                callback_url: url.into(),
                ..Default::default()
            })
            .await;
        let s = assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(crate::helpers::bad_fields(&s), ["callback_url"], "{url}");
    }
    let cart = c
        .create_cart(CreateCartRequest {
            callback_url: "https://pay.example/ok".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = c
        .update_cart(UpdateCartRequest {
            cart_id: cart.id,
            callback_cancel_url: Some("http://evil.example/".into()),
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
}

both_stores!(
    a_confirmed_cart_calls_back_once_signed,
    retries_until_200,
    gives_up_after_the_configured_attempts,
    manual_carts_call_back_only_when_the_provider_confirms,
    only_http_urls_and_allowed_hosts,
);

/// The server stops after the change commits but before any POST gets
/// through (the receiver is down); a new instance delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_survives_the_server_that_committed_it() {
    let db = fresh_database().await;
    // Reserve a port, then close it: the receiver is down.
    let down = Receiver::start(&[]).await;
    let addr = down.addr;
    let url = down.url("/ok");
    drop(down);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let a = spawn_app_on(&db, fast).await;
    let mut c = a.client.clone();
    let cart = cart_with(&mut c, ConfirmationType::Automatic, &url, "").await;
    submit(&mut c, &cart.id).await;
    confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    a.shut_down().await;

    let rx = Receiver::start_on(addr, &[], None).await;
    let b = spawn_app_on(&db, fast).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/ok");
    verify(&got[0]);
    let d = settled(&b, &cart.id).await;
    assert_eq!(d[0].state, "delivered");
}

/// Two instances on one database POST each callback once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deliver_each_callback_once() {
    let db = fresh_database().await;
    let rx = Receiver::start(&[]).await;
    let a = spawn_app_on(&db, fast).await;
    let _b = spawn_app_on(&db, fast).await;
    let mut c = a.client.clone();
    let mut ids = Vec::new();
    for i in 0..10 {
        let cart = c
            .create_cart(CreateCartRequest {
                callback_cancel_url: rx.url(&format!("/cancel/{i}")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        cancel(&mut c, &cart.id).await.unwrap();
        ids.push(cart.id);
    }
    rx.wait_for(10, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut paths: Vec<_> = rx.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(rx.received().len(), 10, "each callback POSTed once");
    assert_eq!(paths.len(), 10);
}
