//! Retention through the API: with CART_EVENT_RETENTION / CART_RETENTION
//! set small, the server's own sweeper compacts the event log and deletes
//! old final carts; watchers resuming below what is held are told where to
//! resume (OUT_OF_RANGE, EVENTS_COMPACTED). Waits are deadlines on
//! conditions, never fixed sleeps.

use std::time::{Duration, Instant};

use cart_service::proto::{
    self, Actor, AddItemsRequest, CartStatus, GetCartRequest, WatchCartRequest, WatchCartsRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, assert_error, cancel, confirm, create_cart, get, http_get, item, next,
        spawn_app_with, submit,
    },
};

/// How long a test waits for the sweeper to get somewhere.
const DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two looks while waiting.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

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

async fn watch_carts(c: &mut Client, after_sequence: i64) -> tonic::Streaming<proto::CartEvent> {
    c.watch_carts(WatchCartsRequest {
        after_sequence,
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

/// The first message of a stream: an event, or the error it ends with.
async fn first(mut stream: tonic::Streaming<proto::CartEvent>) -> Result<proto::CartEvent, Status> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a first message within 5 s")
        .map(|m| m.expect("the stream sends something before it ends"))
}

/// Asserts EVENTS_COMPACTED and answers its ErrorInfo metadata `key`.
#[track_caller]
fn compacted(r: Result<proto::CartEvent, Status>, key: &str) -> i64 {
    let status = assert_error(r, Code::OutOfRange, "EVENTS_COMPACTED");
    let info = status.get_details_error_info().expect("ErrorInfo");
    info.metadata
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", info.metadata))
        .parse()
        .expect("a number")
}

async fn a_watcher_below_the_compaction_point_is_told_where_to_resume(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.event_retention = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let mut c = app.client.clone();
    // The sequences, from a watcher that follows from now on.
    let mut live = watch_carts(&mut c, 0).await;
    let cart = create_cart(&mut c, vec![]).await;
    add(&mut c, &cart.id, "A").await;
    add(&mut c, &cart.id, "B").await;
    let other = create_cart(&mut c, vec![]).await;
    let mut seqs = Vec::new();
    for _ in 0..4 {
        seqs.push(next(&mut live).await.sequence);
    }
    drop(live);

    // The sweeper passes all four once they are a second old: the cart's
    // v1 and v2 are deleted, its v3 and the other cart's v1 (current) stay.
    let deadline = Instant::now() + DEADLINE;
    let through = loop {
        let r = first(watch_carts(&mut c, seqs[0]).await).await;
        if let Err(s) = &r
            && s.code() == Code::OutOfRange
        {
            let through = compacted(r, "compacted_through");
            if through == seqs[3] {
                break through;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the compaction point did not reach {}",
            seqs[3]
        );
        tokio::time::sleep(LOOK_AGAIN).await;
    };
    let r = first(watch_carts(&mut c, seqs[2]).await).await;
    assert_eq!(compacted(r, "compacted_through"), through);

    // WatchCart: versions 1 and 2 are gone; 3 is the oldest held.
    let r = first(watch_cart(&mut c, &cart.id, 1).await).await;
    assert_eq!(compacted(r, "oldest_version"), 3);
    let now = first(watch_cart(&mut c, &cart.id, 0).await).await.unwrap();
    assert_eq!(
        now.version, 3,
        "without after_version: the cart as it stands"
    );
    let held = first(watch_cart(&mut c, &cart.id, 2).await).await.unwrap();
    assert_eq!((held.version, held.sequence), (3, seqs[2]));
    let theirs = first(watch_cart(&mut c, &other.id, 0).await).await.unwrap();
    assert_eq!(theirs.version, 1);

    // Resuming at compacted_through works and misses nothing that follows.
    let mut resumed = watch_carts(&mut c, through).await;
    add(&mut c, &cart.id, "C").await;
    let ev = next(&mut resumed).await;
    assert_eq!((ev.cart_id.as_str(), ev.version), (cart.id.as_str(), 4));
    assert!(ev.sequence > through);
}

async fn a_final_cart_goes_after_cart_retention_and_an_active_one_stays(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.retention = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let mut c = app.client.clone();
    // Made first, so each is at least as old as the final carts.
    let active = create_cart(&mut c, vec![item("A", 1, "1.00")]).await;
    let awaiting = create_cart(&mut c, vec![item("A", 1, "1.00")]).await;
    submit(&mut c, &awaiting.id).await;
    let confirmed = create_cart(&mut c, vec![item("A", 1, "1.00")]).await;
    submit(&mut c, &confirmed.id).await;
    confirm(&mut c, &confirmed.id, Actor::Customer)
        .await
        .unwrap();
    let cancelled = create_cart(&mut c, vec![]).await;
    cancel(&mut c, &cancelled.id).await.unwrap();

    let deadline = Instant::now() + DEADLINE;
    for gone in [&confirmed, &cancelled] {
        loop {
            let r = c
                .get_cart(GetCartRequest {
                    cart_id: gone.id.clone(),
                })
                .await;
            if r.is_err() {
                assert_error(r, Code::NotFound, "CART_NOT_FOUND");
                break;
            }
            assert!(Instant::now() < deadline, "cart {} stayed", gone.id);
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }
    let r = c
        .watch_cart(WatchCartRequest {
            cart_id: confirmed.id.clone(),
            after_version: 0,
        })
        .await;
    assert_error(r, Code::NotFound, "CART_NOT_FOUND");

    assert_eq!(
        get(&mut c, &active.id).await.status,
        CartStatus::Active as i32
    );
    assert_eq!(
        get(&mut c, &awaiting.id).await.status,
        CartStatus::AwaitingCustomer as i32
    );
    let (code, text) = http_get(app.metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    let deleted = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"cart_retention_deleted_total{kind="carts"} "#))
        .expect("the carts series")
        .parse::<f64>()
        .unwrap();
    assert!(deleted >= 2.0, "{deleted}");
}

both_stores!(
    a_watcher_below_the_compaction_point_is_told_where_to_resume,
    a_final_cart_goes_after_cart_retention_and_an_active_one_stays,
);
