//! WatchCarts progress markers (`progress_interval`): a quiet filter still
//! learns how far the stream has come, a resume from a marker misses
//! nothing and repeats nothing, markers never pass an event not yet sent
//! (nor one still in flight), and bad intervals are refused.

use cart_service::proto::{
    self, Actor, AddItemsRequest, CartEventType, CartStatus, WatchCartsRequest,
};
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, assert_error, bad_fields, cancel, confirm, create_cart, fresh_database,
        item, next, spawn_app, spawn_app_on, submit,
    },
};

/// The interval the tests ask for: short, but above the 100 ms floor.
const INTERVAL_MS: i32 = 200;
/// Messages read while waiting for a marker to reach a sequence; at one
/// marker per interval this bounds the wait near 100 s, far past need.
const MAX_MESSAGES: usize = 500;

fn millis(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

async fn watch(
    c: &mut Client,
    after_sequence: i64,
    statuses: &[CartStatus],
    progress_ms: Option<i32>,
) -> tonic::Streaming<proto::CartEvent> {
    c.watch_carts(WatchCartsRequest {
        statuses: statuses.iter().map(|s| *s as i32).collect(),
        after_sequence,
        progress_interval: progress_ms.map(|ms| millis(ms.into())),
    })
    .await
    .expect("watch carts")
    .into_inner()
}

async fn add(c: &mut Client, id: &str, sku: &str) {
    c.add_items(AddItemsRequest {
        cart_id: id.into(),
        items: vec![item(sku, 1, "1.00")],
        ..Default::default()
    })
    .await
    .expect("add items");
}

/// A cart created with one line, submitted and confirmed: three events.
async fn confirmed_cart(c: &mut Client) -> String {
    let id = create_cart(c, vec![item("A", 1, "1.00")]).await.id;
    submit(c, &id).await;
    confirm(c, &id, Actor::Customer).await.expect("confirm");
    id
}

fn is_progress(ev: &proto::CartEvent) -> bool {
    ev.r#type() == CartEventType::Progress
}

/// Reads `n` events from an unfiltered stream (no markers): the log as
/// the tenant sees it.
async fn read_log(
    stream: &mut tonic::Streaming<proto::CartEvent>,
    n: usize,
) -> Vec<proto::CartEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ev = next(stream).await;
        assert!(!is_progress(&ev), "no markers were asked for: {ev:?}");
        out.push(ev);
    }
    out
}

/// Reads a stream until a marker at or past `sequence` (bounded by a
/// count; each message within 5 s). Answers the events before it and the
/// marker, checking the order on the way: sequences never go back, and
/// an event always comes after every marker sent before it.
async fn until_marker_reaches(
    stream: &mut tonic::Streaming<proto::CartEvent>,
    sequence: i64,
) -> (Vec<proto::CartEvent>, proto::CartEvent) {
    let mut events = Vec::new();
    let mut last_marker = i64::MIN;
    let mut last_event = i64::MIN;
    for _ in 0..MAX_MESSAGES {
        let ev = next(stream).await;
        if is_progress(&ev) {
            check_marker(&ev);
            assert!(
                ev.sequence >= last_marker && ev.sequence >= last_event,
                "marker {} after marker {last_marker} / event {last_event}",
                ev.sequence
            );
            last_marker = ev.sequence;
            if ev.sequence >= sequence {
                return (events, ev);
            }
        } else {
            assert!(
                ev.sequence > last_marker && ev.sequence > last_event,
                "event {} after marker {last_marker} / event {last_event}",
                ev.sequence
            );
            last_event = ev.sequence;
            events.push(ev);
        }
    }
    panic!("no marker reached {sequence} in {MAX_MESSAGES} messages (last marker {last_marker})")
}

/// A marker is a position only.
fn check_marker(ev: &proto::CartEvent) {
    assert!(ev.cart.is_none(), "a marker has no cart: {ev:?}");
    assert_eq!((ev.cart_id.as_str(), ev.version), ("", 0));
    assert_eq!(ev.status(), CartStatus::Unspecified);
    assert!(ev.occurred_at.is_some(), "a marker says when it was made");
}

fn ids_and_sequences(events: &[proto::CartEvent]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| (e.cart_id.clone(), e.sequence))
        .collect()
}

/// A watcher of a status nobody reaches hears only markers, and they rise
/// with the other carts' changes until they pass the last of them.
async fn progress_markers_follow_changes_a_quiet_filter_does_not_pass(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut log = watch(&mut c, 0, &[], None).await;
    let mut quiet = watch(&mut c, 0, &[CartStatus::Merged], Some(INTERVAL_MS)).await;
    let first = next(&mut quiet).await;
    assert!(is_progress(&first), "only markers: {first:?}");
    check_marker(&first);

    let a = create_cart(&mut c, vec![]).await.id;
    let b = create_cart(&mut c, vec![]).await.id;
    for i in 0..3 {
        add(&mut c, &a, &format!("A{i}")).await;
        add(&mut c, &b, &format!("B{i}")).await;
    }
    confirmed_cart(&mut c).await;
    let changes = read_log(&mut log, 2 + 6 + 3).await;
    let last = changes.last().unwrap().sequence;
    assert!(last > first.sequence);

    let (events, reached) = until_marker_reaches(&mut quiet, last).await;
    assert!(events.is_empty(), "nothing passes the filter: {events:?}");
    assert!(reached.sequence >= first.sequence);
    // Silence goes on: markers keep coming (liveness), never going back.
    let again = next(&mut quiet).await;
    assert!(is_progress(&again));
    assert!(again.sequence >= reached.sequence);
}

/// A CONFIRMED watcher takes a marker's sequence S, leaves, and comes back
/// with after_sequence = S: it gets exactly the confirmations after S.
async fn resuming_from_a_progress_marker_misses_nothing_and_repeats_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    // The log is not empty: a resume from 0 would mean "from now on".
    let busy = create_cart(&mut c, vec![item("X", 1, "1.00")]).await.id;
    let mut log = watch(&mut c, 0, &[], None).await;
    let mut confirmed = watch(&mut c, 0, &[CartStatus::Confirmed], Some(INTERVAL_MS)).await;
    // A marker before the confirmation: a resume point before it.
    let early = next(&mut confirmed).await;
    assert!(is_progress(&early), "nothing happened yet: {early:?}");
    assert!(early.sequence > 0);

    // Before the next marker: one confirmation among other changes.
    let first = confirmed_cart(&mut c).await;
    add(&mut c, &busy, "Y").await;
    let before = read_log(&mut log, 3 + 1).await;
    let (events, marker) =
        until_marker_reaches(&mut confirmed, before.last().unwrap().sequence).await;
    let confirm_event = before
        .iter()
        .find(|e| e.status() == CartStatus::Confirmed)
        .unwrap();
    assert_eq!(
        ids_and_sequences(&events),
        [(first.clone(), confirm_event.sequence)],
        "the confirmation comes before the marker that passes it"
    );
    let s = marker.sequence;
    drop(confirmed);

    // While away: confirmations and other changes.
    let second = confirmed_cart(&mut c).await;
    add(&mut c, &busy, "Z").await;
    submit(&mut c, &busy).await;
    confirm(&mut c, &busy, Actor::Customer).await.unwrap();
    let cancelled = create_cart(&mut c, vec![item("C", 1, "1.00")]).await.id;
    cancel(&mut c, &cancelled).await.unwrap();
    let third = confirmed_cart(&mut c).await;
    let after = read_log(&mut log, 3 + 3 + 2 + 3).await;
    let expected: Vec<_> = after
        .iter()
        .filter(|e| e.status() == CartStatus::Confirmed && e.sequence > s)
        .cloned()
        .collect();
    assert_eq!(
        expected
            .iter()
            .map(|e| e.cart_id.as_str())
            .collect::<Vec<_>>(),
        [second.as_str(), busy.as_str(), third.as_str()],
        "every confirmation while away is after the marker"
    );

    let end = after.last().unwrap().sequence;
    let mut resumed = watch(&mut c, s, &[CartStatus::Confirmed], Some(INTERVAL_MS)).await;
    let (events, _) = until_marker_reaches(&mut resumed, end).await;
    assert_eq!(ids_and_sequences(&events), ids_and_sequences(&expected));

    // From the early marker: every confirmation, the first one included.
    let mut resumed = watch(
        &mut c,
        early.sequence,
        &[CartStatus::Confirmed],
        Some(INTERVAL_MS),
    )
    .await;
    let (events, _) = until_marker_reaches(&mut resumed, end).await;
    let everything: Vec<_> = before
        .iter()
        .chain(&after)
        .filter(|e| e.status() == CartStatus::Confirmed)
        .cloned()
        .collect();
    assert_eq!(everything.len(), 4);
    assert_eq!(ids_and_sequences(&events), ids_and_sequences(&everything));
}

/// Writers keep changing carts while a CONFIRMED watcher with a short
/// interval gets markers between the rare confirmations: no event ever
/// follows a marker at or past its sequence, and every confirmation
/// arrives once.
async fn progress_markers_never_pass_an_unsent_event_under_writes(b: Backend) {
    const ADDERS: usize = 3;
    const ADDS: usize = 60;
    const ROUNDS: usize = 5;
    const ROUND_ADDS: usize = 10;
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut log = watch(&mut c, 0, &[], None).await;
    let mut confirmed = watch(&mut c, 0, &[CartStatus::Confirmed], Some(100)).await;
    let mut writers = Vec::new();
    for w in 0..ADDERS {
        let mut c = c.clone();
        writers.push(tokio::spawn(async move {
            let id = create_cart(&mut c, vec![]).await.id;
            for i in 0..ADDS {
                add(&mut c, &id, &format!("W{w}-{i}")).await;
            }
        }));
    }
    let mut c2 = c.clone();
    writers.push(tokio::spawn(async move {
        for _ in 0..ROUNDS {
            let id = create_cart(&mut c2, vec![]).await.id;
            for i in 0..ROUND_ADDS {
                add(&mut c2, &id, &format!("R{i}")).await;
            }
            submit(&mut c2, &id).await;
            confirm(&mut c2, &id, Actor::Customer).await.unwrap();
        }
    }));
    for w in writers {
        w.await.unwrap();
    }
    let all = read_log(
        &mut log,
        ADDERS * (1 + ADDS) + ROUNDS * (1 + ROUND_ADDS + 2),
    )
    .await;
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.status() == CartStatus::Confirmed)
        .cloned()
        .collect();
    assert_eq!(expected.len(), ROUNDS);
    // Checks the order of events and markers as it reads.
    let (events, _) = until_marker_reaches(&mut confirmed, all.last().unwrap().sequence).await;
    assert_eq!(ids_and_sequences(&events), ids_and_sequences(&expected));
}

async fn bad_progress_intervals_are_invalid_arguments_naming_the_field(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let bad = [
        millis(-1000),
        millis(-1),
        millis(99),
        millis(3_600_001),
        prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        },
        prost_types::Duration {
            seconds: 0,
            nanos: 1_000_000_000,
        },
        prost_types::Duration {
            seconds: 1,
            nanos: -1,
        },
    ];
    for d in bad {
        let r = c
            .watch_carts(WatchCartsRequest {
                progress_interval: Some(d),
                ..Default::default()
            })
            .await;
        let status = assert_error(r, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(bad_fields(&status), ["progress_interval"], "{d:?}");
    }
    // The bounds themselves, and 0 (no markers), are fine.
    for ms in [0, 100, 3_600_000] {
        c.watch_carts(WatchCartsRequest {
            progress_interval: Some(millis(ms)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{ms} ms refused: {e:?}"));
    }
}

/// Postgres: a transaction holding a lower sequence is still open while a
/// later one commits. Markers stay below the open one (resuming from them
/// must not skip it); once it commits, both events come, then markers
/// past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_marker_never_passes_a_transaction_in_flight() {
    let db = fresh_database().await;
    let app = spawn_app_on(&db, |_| {}).await;
    let mut c = app.client.clone();
    let x = create_cart(&mut c, vec![]).await;
    let y = create_cart(&mut c, vec![]).await;
    let (sql, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let before: i64 = sql
        .query_one("SELECT max(sequence) FROM cart_events", &[])
        .await
        .unwrap()
        .get(0);
    let mut stream = watch(&mut c, before, &[], Some(INTERVAL_MS)).await;

    // T1 changes cart X the way the service does (row first, then its
    // event), taking the next sequence, and stays open (as in replicas.rs).
    let (mut t1_conn, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let t1 = t1_conn.transaction().await.unwrap();
    let x_id: uuid::Uuid = x.id.parse().unwrap();
    t1.execute(
        "UPDATE carts SET version = version + 1, updated_at = now() WHERE id = $1",
        &[&x_id],
    )
    .await
    .unwrap();
    let t1_seq: i64 = t1
        .query_one(
            "INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at) \
             SELECT tenant, id, version, 'DETAILS_CHANGED', status, status, updated_at, expires_at FROM carts WHERE id = $1 \
             RETURNING sequence",
            &[&x_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t1_seq, before + 1);
    // T2, through the service, takes a higher sequence and commits first.
    add(&mut c, &y.id, "A").await;
    let t2_seq: i64 = sql
        .query_one("SELECT max(sequence) FROM cart_events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(t2_seq > t1_seq);

    // Markers while T1 is open (a few intervals' worth, counted).
    for _ in 0..5 {
        let ev = next(&mut stream).await;
        assert!(
            is_progress(&ev),
            "nothing may be sent while T1 is in flight: {ev:?}"
        );
        assert!(
            ev.sequence < t1_seq,
            "marker {} passes T1 ({t1_seq})",
            ev.sequence
        );
    }

    t1.commit().await.unwrap();
    let (events, _) = until_marker_reaches(&mut stream, t2_seq).await;
    assert_eq!(
        ids_and_sequences(&events),
        [(x.id.clone(), t1_seq), (y.id.clone(), t2_seq)],
        "T1's event, then T2's"
    );
}

both_stores!(
    progress_markers_follow_changes_a_quiet_filter_does_not_pass,
    resuming_from_a_progress_marker_misses_nothing_and_repeats_nothing,
    progress_markers_never_pass_an_unsent_event_under_writes,
    bad_progress_intervals_are_invalid_arguments_naming_the_field,
);
