//! Callback delivery under load and faults: concurrent POSTs, a hanging
//! endpoint that holds back only its own callbacks, and an endpoint that
//! keeps failing, backed off as a whole and resumed when it answers.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cart_service::{
    config::{Backoff, Config},
    domain::TenantId,
    ports::DeliveryState,
    proto::{Actor, CreateCartRequest},
};

use crate::{
    both_stores,
    helpers::{Backend, Client, TestApp, cancel, confirm, item, keys, spawn_app_with, submit},
    receiver::{Received, Receiver},
};

/// A cart of `tenant` whose cancellation calls `url`; answers its id.
async fn cancelled_with_callback(c: &mut Client, url: &str) -> String {
    let cart = c
        .create_cart(CreateCartRequest {
            callback_cancel_url: url.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    cancel(c, &cart.id).await.unwrap();
    cart.id
}

/// A submitted cart that calls `url` once confirmed; answers its id.
async fn awaiting_with_callback(c: &mut Client, url: &str) -> String {
    let cart = c
        .create_cart(CreateCartRequest {
            callback_url: url.into(),
            items: vec![item("A", 1, "1.00")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    submit(c, &cart.id).await;
    cart.id
}

async fn deliveries(app: &TestApp, tenant: &str, cart: &str) -> Vec<DeliveryState> {
    app.store
        .callbacks_of(&TenantId(tenant.into()), cart.parse().unwrap())
        .await
        .unwrap()
}

/// Waits until every cart's callback is delivered (failing after `within`).
async fn all_delivered(app: &TestApp, tenant: &str, carts: &[String], within: Duration) {
    let start = Instant::now();
    for cart in carts {
        loop {
            let d = deliveries(app, tenant, cart).await;
            if d.len() == 1 && d[0].state == "delivered" {
                break;
            }
            assert!(start.elapsed() < within, "not delivered in time: {d:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn by_webhook_id(got: &[Received]) -> HashMap<String, Vec<u16>> {
    let mut ids: HashMap<String, Vec<u16>> = HashMap::new();
    for r in got {
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        ids.entry(id).or_default().push(r.status);
    }
    ids
}

/// More callbacks than the old batch of 16, to a receiver that answers
/// none of them until all are in flight at once, then after 200 ms: only
/// concurrent delivery gets them through, in about 200 ms rather than
/// N x 200 ms.
async fn deliveries_run_concurrently(b: Backend) {
    const N: usize = 40;
    let rx = Receiver::start(&[]).await;
    rx.set_gate(N);
    rx.set_delay(Duration::from_millis(200));
    let app = spawn_app_with(b, |c| c.callback_timeout = Duration::from_secs(30)).await;
    let mut c = app.client.clone();
    let mut carts = Vec::new();
    for _ in 0..N {
        carts.push(awaiting_with_callback(&mut c, &rx.url("/ok")).await);
    }
    let start = Instant::now();
    for cart in &carts {
        confirm(&mut c, cart, Actor::Customer).await.unwrap();
    }
    all_delivered(&app, "default", &carts, Duration::from_secs(30)).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(200) * N as u32,
        "{N} callbacks of 200 ms took {took:?}"
    );
    for cart in &carts {
        assert_eq!(deliveries(&app, "default", cart).await[0].attempts, 1);
    }
    assert_eq!(rx.received().len(), N, "each POSTed once");
}

/// Tenant a's receiver hangs on more callbacks than one endpoint may hold;
/// tenant b's callbacks still arrive within a second of each confirmation.
async fn a_hanging_endpoint_does_not_delay_another_tenant(b: Backend) {
    const HANGING: usize = 80;
    let hang = Receiver::start(&[]).await;
    hang.set_delay(Duration::from_secs(120));
    let rx = Receiver::start(&[]).await;
    let app = spawn_app_with(b, |c: &mut Config| {
        c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")]);
        c.callback_timeout = Duration::from_secs(60);
    })
    .await;
    let mut a = app.client_with_key(Some("key-a"));
    let mut bc = app.client_with_key(Some("key-b"));
    for _ in 0..HANGING {
        cancelled_with_callback(&mut a, &hang.url("/a")).await;
    }
    // The endpoint's share (64 by default) is taken and held.
    hang.wait_for(64, Duration::from_secs(20)).await;
    let mut carts = Vec::new();
    for _ in 0..5 {
        carts.push(awaiting_with_callback(&mut bc, &rx.url("/b")).await);
    }
    for (i, cart) in carts.iter().enumerate() {
        let confirmed = Instant::now();
        confirm(&mut bc, cart, Actor::Customer).await.unwrap();
        let got = rx.wait_for(i + 1, Duration::from_secs(10)).await;
        let delay = got[i].at.saturating_duration_since(confirmed);
        assert!(
            delay <= Duration::from_secs(1),
            "tenant b's callback {i} took {delay:?} behind a hanging endpoint"
        );
    }
    assert!(
        hang.received().len() <= 64,
        "the hanging endpoint holds no more than its share"
    );
}

/// An endpoint that keeps failing is backed off as a whole: its callbacks
/// wait (probed now and then) instead of spending their retries, then all
/// arrive once it answers again, each answered 200 exactly once.
async fn a_failing_endpoint_is_backed_off_then_resumes(b: Backend) {
    const N: usize = 20;
    let rx = Receiver::always(503).await;
    let app = spawn_app_with(b, |c| {
        c.callback_timeout = Duration::from_millis(500);
        // 2 s of retries in all: without backing off, every callback
        // would give up during the outage below.
        c.callback_backoff = Backoff(vec![Duration::from_millis(100); 20]);
    })
    .await;
    let mut c = app.client.clone();
    let mut carts = Vec::new();
    for _ in 0..N {
        carts.push(cancelled_with_callback(&mut c, &rx.url("/cancel")).await);
    }
    // The circuit opens after a few failures; the rest wait for it.
    let start = Instant::now();
    loop {
        let failed = rx.received().len();
        let due = app.metrics.render(None, 0);
        if failed >= 5 && due.contains("cart_callback_circuits_open 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "circuit never opened: {failed} failures"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rx.received().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rx.received().len() - before;
    // Unbroken, N callbacks retried every 100 ms would make ~600 requests.
    assert!(
        during <= 5,
        "{during} requests while backed off (probes only)"
    );
    for cart in &carts {
        let d = deliveries(&app, "default", cart).await;
        assert_eq!(
            d[0].state, "pending",
            "no retries spent while backed off: {d:?}"
        );
    }

    rx.set_always(None);
    all_delivered(&app, "default", &carts, Duration::from_secs(30)).await;
    let ids = by_webhook_id(&rx.received());
    assert_eq!(ids.len(), N, "every callback arrived");
    for (id, statuses) in &ids {
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 1, "{id}: delivered exactly once: {statuses:?}");
        assert_eq!(statuses.last(), Some(&200), "{id}: nothing after the 200");
    }
    for cart in &carts {
        let d = &deliveries(&app, "default", cart).await[0];
        assert_eq!(
            d.attempts as usize,
            ids[&d.id.to_string()].len(),
            "attempts counted as made"
        );
    }
}

both_stores!(
    deliveries_run_concurrently,
    a_hanging_endpoint_does_not_delay_another_tenant,
    a_failing_endpoint_is_backed_off_then_resumes,
);
