//! Several servers on one Postgres database: changes through one reach
//! watchers on another, out-of-order commits are not skipped, and
//! concurrent sweepers expire a cart once.

use std::time::{Duration, Instant};

use cart_service::proto::{
    AddItemsRequest, CartStatus, GetCartRequest, WatchCartRequest, WatchCartsRequest,
};

use crate::helpers::{create_cart, fresh_database, item, next, spawn_app_on};

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_replica_reach_watchers_on_another_within_a_second() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |_| {}).await;
    let b = spawn_app_on(&db, |_| {}).await;
    let mut ca = a.client.clone();
    let mut cb = b.client.clone();
    let cart = create_cart(&mut ca, vec![]).await;
    let mut tenant_stream = cb
        .watch_carts(WatchCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut cart_stream = cb
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut cart_stream).await.version, 1);
    let mut last_sequence = 0;
    for i in 0..20 {
        let written = ca
            .add_items(AddItemsRequest {
                cart_id: cart.id.clone(),
                items: vec![item(&format!("S{i}"), 1, "1")],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let start = Instant::now();
        let ev = tokio::time::timeout(Duration::from_secs(1), next(&mut tenant_stream))
            .await
            .expect("replica B hears of A's change within 1 s");
        assert_eq!(
            (ev.cart_id.as_str(), ev.version),
            (cart.id.as_str(), written.version),
            "in order, exactly once"
        );
        assert!(ev.sequence > last_sequence);
        last_sequence = ev.sequence;
        let ev = tokio::time::timeout(Duration::from_secs(1), next(&mut cart_stream))
            .await
            .expect("WatchCart on B hears of it within 1 s");
        assert_eq!(ev.version, written.version);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

/// A transaction that writes a table of its own (a batch job, a migration,
/// a psql session left in BEGIN) and stays open delays no event: changes
/// reach WatchCart and WatchCarts on both replicas within a second while
/// it is open for five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_open_transaction_delays_no_event() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |_| {}).await;
    let b = spawn_app_on(&db, |_| {}).await;
    let (mut ca, mut cb) = (a.client.clone(), b.client.clone());
    let cart = create_cart(&mut ca, vec![]).await;

    let mut batch = raw(&db).await;
    batch
        .batch_execute("CREATE TABLE batch_job (n int)")
        .await
        .unwrap();
    let job = batch.transaction().await.unwrap();
    job.execute("INSERT INTO batch_job VALUES (1)", &[])
        .await
        .unwrap();
    let opened = Instant::now();

    let mut streams = Vec::new();
    for c in [&mut ca, &mut cb] {
        streams.push(
            c.watch_carts(WatchCartsRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
        let mut one = c
            .watch_cart(WatchCartRequest {
                cart_id: cart.id.clone(),
                after_version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next(&mut one).await.version, 1, "the cart as it stands");
        streams.push(one);
    }
    for round in 0..3 {
        let written = ca
            .add_items(AddItemsRequest {
                cart_id: cart.id.clone(),
                items: vec![item("A", 1, "1")],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let sent = Instant::now();
        for stream in &mut streams {
            let ev = tokio::time::timeout(Duration::from_secs(1), next(stream))
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: an event held back by the open transaction")
                });
            assert_eq!(ev.version, written.version);
        }
        assert!(sent.elapsed() < Duration::from_secs(1));
    }
    // Open for every change above; it stays open 5 s or more, as the
    // issue measured, before it ends.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(opened.elapsed())).await;
    job.rollback().await.unwrap();
}

/// A replica that goes away mid-stream: its watchers resume on the replica
/// that takes its place, from their last sequence or version, and get
/// every change made meanwhile exactly once, then the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_a_restarted_replica_resume_without_loss() {
    let db = fresh_database().await;
    let writer = spawn_app_on(&db, |_| {}).await;
    let mut cw = writer.client.clone();
    let cart = create_cart(&mut cw, vec![]).await;
    let add = |c: &mut crate::helpers::Client, sku: &'static str| {
        let mut c = c.clone();
        let id = cart.id.clone();
        async move {
            c.add_items(AddItemsRequest {
                cart_id: id,
                items: vec![item(sku, 1, "1")],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .version
        }
    };

    let watched = spawn_app_on(&db, |_| {}).await;
    let mut cv = watched.client.clone();
    let mut tenant = cv
        .watch_carts(WatchCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (mut sequence, mut version) = (0, 0);
    for sku in ["A", "B"] {
        let v = add(&mut cw, sku).await;
        let ev = next(&mut tenant).await;
        assert_eq!(ev.version, v);
        (sequence, version) = (ev.sequence, ev.version);
    }
    watched.shut_down().await;

    // Changes while no replica serves the watcher.
    let mut missed = Vec::new();
    for sku in ["C", "D", "E"] {
        missed.push(add(&mut cw, sku).await);
    }

    let again = spawn_app_on(&db, |_| {}).await;
    let mut cv = again.client.clone();
    let mut tenant = cv
        .watch_carts(WatchCartsRequest {
            after_sequence: sequence,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut one = cv
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: version,
        })
        .await
        .unwrap()
        .into_inner();
    missed.push(add(&mut cw, "F").await);
    for expected in &missed {
        let ev = next(&mut tenant).await;
        assert_eq!((ev.version, ev.sequence > sequence), (*expected, true));
        sequence = ev.sequence;
        assert_eq!(next(&mut one).await.version, *expected);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), tenant.message()).await;
    assert!(quiet.is_err(), "nothing twice: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_with_a_lower_sequence_is_not_skipped() {
    let db = fresh_database().await;
    let app = spawn_app_on(&db, |_| {}).await;
    let mut c = app.client.clone();
    let x = create_cart(&mut c, vec![]).await;
    let y = create_cart(&mut c, vec![]).await;
    let sql = raw(&db).await;
    let before: i64 = sql
        .query_one("SELECT max(sequence) FROM cart_events", &[])
        .await
        .unwrap()
        .get(0);

    // T1 changes cart X the way the service does (row first, then its
    // event), taking the next sequence, and stays open.
    let mut t1_conn = raw(&db).await;
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

    // T2 (through the service) takes a higher sequence and commits first.
    let t2 = c
        .add_items(AddItemsRequest {
            cart_id: y.id.clone(),
            items: vec![item("A", 1, "1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t2_seq: i64 = sql
        .query_one(
            "SELECT sequence FROM cart_events WHERE cart_id = $1 AND version = $2",
            &[&y.id.parse::<uuid::Uuid>().unwrap(), &t2.version],
        )
        .await
        .unwrap()
        .get(0);
    assert!(t2_seq > t1_seq);

    // A watcher resuming between the two commits must not move past T1.
    let mut stream = c
        .watch_carts(WatchCartsRequest {
            statuses: vec![],
            after_sequence: before,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let early = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        early.is_err(),
        "nothing may be sent while T1 is in flight: {early:?}"
    );

    t1.commit().await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(
        (first.sequence, first.cart_id.as_str()),
        (t1_seq, x.id.as_str()),
        "T1's event is delivered"
    );
    let second = next(&mut stream).await;
    assert_eq!(
        (second.sequence, second.cart_id.as_str()),
        (t2_seq, y.id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweepers_expire_a_cart_once() {
    let db = fresh_database().await;
    let fast = |c: &mut cart_service::config::Config| {
        c.ttl = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(20);
    };
    let a = spawn_app_on(&db, fast).await;
    let _b = spawn_app_on(&db, fast).await;
    let mut c = a.client.clone();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(create_cart(&mut c, vec![]).await.id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        loop {
            let cart = c
                .get_cart(GetCartRequest {
                    cart_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if cart.status() == CartStatus::Expired {
                assert_eq!(cart.version, 2, "one version bump");
                break;
            }
            assert!(Instant::now() < deadline, "cart {id} never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sql = raw(&db).await;
    let rows = sql
        .query(
            "SELECT count(*) FROM cart_events WHERE status = 'EXPIRED' GROUP BY cart_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ids.len());
    assert!(
        rows.iter().all(|r| r.get::<_, i64>(0) == 1),
        "one EXPIRED event per cart"
    );
}
