//! WatchCart and WatchCarts: the first event, live changes, resume, the
//! end of a cart's stream, tenancy and expiry.

use std::time::Duration;

use cart_service::proto::{
    self, Actor, AddItemsRequest, CartEventType, CartStatus, WatchCartRequest, WatchCartsRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, assert_ends, assert_error, cancel, confirm, create_cart, item, keys, next,
        spawn_app, spawn_app_with, submit,
    },
};

async fn add(c: &mut Client, id: &str, sku: &str) -> proto::Cart {
    c.add_items(AddItemsRequest {
        cart_id: id.into(),
        items: vec![item(sku, 1, "1.00")],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn watch_cart(
    c: &mut Client,
    id: &str,
    after_version: i64,
) -> tonic::Streaming<proto::CartEvent> {
    c.watch_cart(WatchCartRequest {
        cart_id: id.into(),
        after_version,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn watch_carts(
    c: &mut Client,
    after_sequence: i64,
    statuses: Vec<CartStatus>,
) -> tonic::Streaming<proto::CartEvent> {
    c.watch_carts(WatchCartsRequest {
        statuses: statuses.into_iter().map(|s| s as i32).collect(),
        after_sequence,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn watch_cart_sends_the_cart_then_every_change_and_ends_when_final(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let mut events = watch_cart(&mut c, &cart.id, 0).await;
    let first = next(&mut events).await;
    assert_eq!((first.version, first.r#type()), (1, CartEventType::Created));
    assert_eq!(first.cart.as_ref().unwrap().id, cart.id);

    add(&mut c, &cart.id, "A").await;
    let ev = next(&mut events).await;
    assert_eq!((ev.version, ev.r#type()), (2, CartEventType::ItemsChanged));
    assert_eq!(ev.cart.unwrap().items.len(), 1);
    submit(&mut c, &cart.id).await;
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.version, ev.status(), ev.previous_status()),
        (3, CartStatus::AwaitingCustomer, CartStatus::Active)
    );
    confirm(&mut c, &cart.id, Actor::Customer).await.unwrap();
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.version, ev.status(), ev.r#type()),
        (4, CartStatus::Confirmed, CartEventType::StatusChanged)
    );
    assert!(ev.sequence > first.sequence);
    assert_ends(&mut events).await;

    // Watching a final cart sends it as it stands and ends.
    let mut events = watch_cart(&mut c, &cart.id, 0).await;
    assert_eq!(next(&mut events).await.version, 4);
    assert_ends(&mut events).await;
}

async fn watch_cart_resumes_after_a_version(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    for sku in ["A", "B", "C"] {
        add(&mut c, &cart.id, sku).await;
    }
    let mut events = watch_cart(&mut c, &cart.id, 2).await;
    assert_eq!(next(&mut events).await.version, 3);
    assert_eq!(next(&mut events).await.version, 4);
    add(&mut c, &cart.id, "D").await;
    assert_eq!(next(&mut events).await.version, 5);
    cancel(&mut c, &cart.id).await.unwrap();
    let last = next(&mut events).await;
    assert_eq!((last.version, last.status()), (6, CartStatus::Cancelled));
    assert_ends(&mut events).await;
}

async fn watch_cart_ends_after_merged(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let source = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    let target = create_cart(&mut c, vec![]).await;
    let mut events = watch_cart(&mut c, &source.id, 0).await;
    next(&mut events).await;
    c.merge_carts(proto::MergeCartsRequest {
        source_cart_id: source.id.clone(),
        target_cart_id: target.id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ev = next(&mut events).await;
    assert_eq!(ev.status(), CartStatus::Merged);
    assert_eq!(ev.cart.unwrap().merged_into_cart_id, target.id);
    assert_ends(&mut events).await;
}

async fn watch_errors(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")])).await;
    let mut a = app.client_with_key(Some("key-a"));
    let mut other = app.client_with_key(Some("key-b"));
    let cart = create_cart(&mut a, vec![]).await;
    let r = other
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: 0,
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");
    let r = a
        .watch_cart(WatchCartRequest {
            cart_id: "nope".into(),
            after_version: 0,
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let r = a
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: -1,
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let r = a
        .watch_carts(WatchCartsRequest {
            statuses: vec![77],
            after_sequence: 0,
            ..Default::default()
        })
        .await;
    assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
    let r = app
        .client_with_key(None)
        .watch_carts(WatchCartsRequest::default())
        .await;
    assert_error(r, Code::Unauthenticated, "UNAUTHENTICATED");
}

async fn watch_carts_sends_only_the_tenants_events_in_order(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")])).await;
    let mut a = app.client_with_key(Some("key-a"));
    let mut other = app.client_with_key(Some("key-b"));
    let mut all = watch_carts(&mut a, 0, vec![]).await;
    let mut submitted = watch_carts(&mut a, 0, vec![CartStatus::AwaitingCustomer]).await;
    let mine = create_cart(&mut a, vec![item("A", 1, "1")]).await;
    create_cart(&mut other, vec![item("B", 1, "1")]).await;
    add(&mut a, &mine.id, "C").await;
    submit(&mut a, &mine.id).await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next(&mut all).await;
        assert_eq!(ev.cart_id, mine.id, "only tenant a's carts");
        seen.push((ev.sequence, ev.version));
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "sequence order: {seen:?}"
    );
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [1, 2, 3]);
    let ev = next(&mut submitted).await;
    assert_eq!((ev.version, ev.status()), (3, CartStatus::AwaitingCustomer));

    // Resuming from a sequence replays what came after it.
    let mut again = watch_carts(&mut a, seen[0].0, vec![]).await;
    assert_eq!(next(&mut again).await.sequence, seen[1].0);
    assert_eq!(next(&mut again).await.sequence, seen[2].0);
}

/// A watcher that reconnects with its last sequence gets every later event
/// exactly once while 8 writers keep changing carts.
async fn watch_carts_resume_misses_nothing_under_writes(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut carts = Vec::new();
    for _ in 0..8 {
        carts.push(create_cart(&mut c, vec![]).await.id);
    }
    const PER_WRITER: usize = 25;
    let mut stream = watch_carts(&mut c, 0, vec![]).await;
    let writers: Vec<_> = carts
        .iter()
        .cloned()
        .map(|id| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    add(&mut c, &id, &format!("S{i}")).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let total = 8 * PER_WRITER;
    let mut got: Vec<(String, i64, i64)> = Vec::new();
    while got.len() < total {
        let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await
        else {
            let seqs: Vec<_> = got.iter().map(|g| g.2).collect();
            panic!("no event within 5 s after {seqs:?}")
        };
        got.push((ev.cart_id.clone(), ev.version, ev.sequence));
        if got.len().is_multiple_of(40) {
            // Disconnect and resume from the last sequence seen.
            drop(stream);
            stream = watch_carts(&mut c, got.last().unwrap().2, vec![]).await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut seqs: Vec<_> = got.iter().map(|g| g.2).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing sequences"
    );
    seqs.dedup();
    assert_eq!(seqs.len(), total, "nothing twice");
    for id in &carts {
        let versions: Vec<_> = got.iter().filter(|g| &g.0 == id).map(|g| g.1).collect();
        assert_eq!(
            versions,
            (2..=(PER_WRITER as i64 + 1)).collect::<Vec<_>>(),
            "every change of {id}, in order"
        );
    }
}

async fn idle_carts_expire_and_watchers_see_it(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.ttl = Duration::from_secs(1);
        c.checkout_timeout = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let mut c = app.client.clone();
    let idle = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    let submitted = create_cart(&mut c, vec![item("A", 1, "1")]).await;
    submit(&mut c, &submitted.id).await;
    let mut events = watch_cart(&mut c, &idle.id, 0).await;
    assert_eq!(next(&mut events).await.version, 1);
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.version, ev.status(), ev.previous_status()),
        (2, CartStatus::Expired, CartStatus::Active)
    );
    assert_ends(&mut events).await;

    let mut events = watch_cart(&mut c, &submitted.id, 2).await;
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.version, ev.status(), ev.previous_status()),
        (3, CartStatus::Expired, CartStatus::AwaitingCustomer)
    );
    // EXPIRED is final.
    let r = c
        .add_items(AddItemsRequest {
            cart_id: idle.id.clone(),
            items: vec![item("B", 1, "1")],
            ..Default::default()
        })
        .await;
    assert_error(r, Code::FailedPrecondition, "CART_NOT_EDITABLE");
    assert_error(
        cancel(&mut c, &idle.id).await,
        Code::FailedPrecondition,
        "INVALID_TRANSITION",
    );
}

/// A 300-line cart changed every way a cart changes: replaying its history
/// answers, at each version, exactly the cart that change answered.
async fn replay_of_a_large_cart_is_exact_at_every_version(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let lines: Vec<_> = (0..300)
        .map(|n| item(&format!("S{n:03}"), 1, "1.00"))
        .collect();
    let first = create_cart(&mut c, lines).await;
    let id = first.id.clone();
    let mut answers = vec![first];
    answers.push(add(&mut c, &id, "S150").await);
    answers.push(add(&mut c, &id, "NEW").await);
    let set = c
        .set_items(proto::SetItemsRequest {
            cart_id: id.clone(),
            items: vec![item("S000", 0, "1.00"), item("S299", 7, "2.00")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    answers.push(set);
    let removed = c
        .remove_items(proto::RemoveItemsRequest {
            cart_id: id.clone(),
            skus: vec!["S010".into(), "S011".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    answers.push(removed);
    let updated = c
        .update_cart(proto::UpdateCartRequest {
            cart_id: id.clone(),
            description: Some("gift".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    answers.push(updated);
    answers.push(add(&mut c, &id, "S000").await);
    answers.push(submit(&mut c, &id).await);

    // (after_version 0 means "no resume": the replay starts after version 1.)
    let mut stream = watch_cart(&mut c, &id, 1).await;
    for answered in &answers[1..] {
        let ev = next(&mut stream).await;
        assert_eq!(ev.version, answered.version);
        assert_eq!(
            ev.cart.as_ref(),
            Some(answered),
            "version {}",
            answered.version
        );
    }
    let last = answers.last().unwrap();
    assert_eq!(
        last.items.len(),
        299,
        "300 + NEW - S000 - S010 - S011 + S000"
    );
    assert_eq!(
        last.items.last().unwrap().sku,
        "S000",
        "a line added again goes last"
    );
}

/// Every stream of a replica sends an event as encoded once (the first
/// stream to send it encodes it): watchers following live, a WatchCarts
/// stream and a watcher replaying from the log all send each change
/// exactly as the change answered.
async fn every_watcher_sends_each_change_as_it_answered(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "1.00")]).await;
    let mut live = Vec::new();
    for _ in 0..4 {
        let mut stream = watch_cart(&mut c, &cart.id, 0).await;
        assert_eq!(next(&mut stream).await.cart.as_ref(), Some(&cart));
        live.push(stream);
    }
    let mut tenant = watch_carts(&mut c, 0, vec![]).await;
    let mut answers = Vec::new();
    for sku in ["B", "C", "A", "D"] {
        answers.push(add(&mut c, &cart.id, sku).await);
    }
    answers.push(submit(&mut c, &cart.id).await);
    for stream in live.iter_mut().chain([&mut tenant]) {
        for answered in &answers {
            let ev = next(stream).await;
            assert_eq!(
                ev.cart.as_ref(),
                Some(answered),
                "version {}",
                answered.version
            );
        }
    }
    let mut replay = watch_cart(&mut c, &cart.id, 1).await;
    for answered in &answers {
        assert_eq!(next(&mut replay).await.cart.as_ref(), Some(answered));
    }
}

/// Changes made while nobody watches (the Postgres publisher then only
/// refreshes its head at the poll) reach a watcher that resumes before
/// them, once each and in order, and live changes follow.
async fn watchers_resuming_after_changes_nobody_watched_miss_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    for i in 0..10 {
        add(&mut c, &cart.id, &format!("Q{i}")).await;
    }
    let mut live = watch_carts(&mut c, 0, vec![]).await;
    for i in 0..3 {
        add(&mut c, &cart.id, &format!("L{i}")).await;
    }
    let mut last = 0;
    for version in 12..=14 {
        let ev = next(&mut live).await;
        assert_eq!(ev.version, version);
        last = ev.sequence;
    }
    drop(live);
    for i in 0..10 {
        add(&mut c, &cart.id, &format!("U{i}")).await;
    }
    let mut resumed = watch_carts(&mut c, last, vec![]).await;
    let mut by_version = watch_cart(&mut c, &cart.id, 20).await;
    add(&mut c, &cart.id, "after").await;
    let mut sequences = Vec::new();
    for version in 15..=25 {
        let ev = next(&mut resumed).await;
        assert_eq!(ev.version, version, "every change once, in order");
        sequences.push(ev.sequence);
    }
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for version in 21..=25 {
        assert_eq!(next(&mut by_version).await.version, version);
    }
}

both_stores!(
    watchers_resuming_after_changes_nobody_watched_miss_nothing,
    every_watcher_sends_each_change_as_it_answered,
    replay_of_a_large_cart_is_exact_at_every_version,
    watch_cart_sends_the_cart_then_every_change_and_ends_when_final,
    watch_cart_resumes_after_a_version,
    watch_cart_ends_after_merged,
    watch_errors,
    watch_carts_sends_only_the_tenants_events_in_order,
    watch_carts_resume_misses_nothing_under_writes,
    idle_carts_expire_and_watchers_see_it,
);
