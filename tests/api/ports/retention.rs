//! Retention and compaction through the store port, on every adapter;
//! then Postgres's purges beside writers and on two replicas at once.

use super::*;

/// Asserts that a read failed because its resume point was compacted.
#[track_caller]
fn assert_compacted<T: std::fmt::Debug>(r: Result<T, CartError>, at: Compacted) {
    match r {
        Err(CartError::EventsCompacted(got)) => assert_eq!(got, at),
        other => panic!("expected EventsCompacted({at:?}), got {other:?}"),
    }
}

fn versions(events: &[cart_service::domain::CartEvent]) -> Vec<i64> {
    events.iter().map(|e| e.version()).collect()
}

async fn retention_deletes_old_events_but_each_carts_current_one(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let mut a = new_cart("");
    let other = new_cart("");
    insert(&*s, &t, &a).await;
    for _ in 0..2 {
        let mut u = s.begin(Isolation::Optimistic).await.unwrap();
        change(u.as_mut(), &t, &mut a, clear(), None).await.unwrap();
        u.commit().await.unwrap();
    }
    insert(&*s, &t, &other).await;
    settled(&*s).await;
    let seqs: Vec<i64> = s
        .tenant_events(&t, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seqs.len(), 4, "a: v1..v3, other: v1");

    assert_eq!(
        s.purge_events(now() - TimeDelta::hours(1), 100)
            .await
            .unwrap(),
        0,
        "nothing occurred before the cutoff"
    );
    assert_eq!(s.tenant_events(&t, 0, 100).await.unwrap().len(), 4);

    let later = now() + TimeDelta::seconds(1);
    assert_eq!(s.purge_events(later, 1).await.unwrap(), 1, "at most limit");
    assert_compacted(
        s.tenant_events(&t, 0, 100).await,
        Compacted::Through(seqs[0]),
    );
    assert_eq!(
        s.purge_events(later, 100).await.unwrap(),
        1,
        "a's v2 goes; a's v3 and other's v1 are current"
    );
    assert_eq!(s.purge_events(later, 100).await.unwrap(), 0, "all passed");
    let through = seqs[3];
    for after in [0, seqs[2]] {
        assert_compacted(
            s.tenant_events(&t, after, 100).await,
            Compacted::Through(through),
        );
    }
    assert!(
        s.tenant_events(&t, through, 100).await.unwrap().is_empty(),
        "resuming at the point works"
    );

    for after in [0, 1] {
        assert_compacted(
            s.cart_events(&t, a.id, after, 10).await,
            Compacted::OldestVersion(3),
        );
    }
    assert_eq!(
        versions(&s.cart_events(&t, a.id, 2, 10).await.unwrap()),
        [3]
    );
    assert_eq!(
        versions(&s.cart_events(&t, other.id, 0, 10).await.unwrap()),
        [1]
    );
    assert_eq!(s.current_event(&t, a.id).await.unwrap().cart, a);
    assert_eq!(s.current_event(&t, other.id).await.unwrap().cart, other);

    // A change after the point is read from it, and misses nothing.
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    change(u.as_mut(), &t, &mut a, clear(), None).await.unwrap();
    u.commit().await.unwrap();
    settled(&*s).await;
    let next = s.tenant_events(&t, through, 100).await.unwrap();
    assert_eq!(versions(&next), [4]);
    assert_eq!(next[0].cart, a);

    // a's v3, kept while it was current, goes when the sweep passes v4.
    assert_eq!(
        s.purge_events(now() + TimeDelta::seconds(1), 100)
            .await
            .unwrap(),
        1
    );
    assert_compacted(
        s.cart_events(&t, a.id, 2, 10).await,
        Compacted::OldestVersion(4),
    );
    assert_eq!(
        versions(&s.cart_events(&t, a.id, 3, 10).await.unwrap()),
        [4]
    );
    assert_compacted(
        s.tenant_events(&t, through, 100).await,
        Compacted::Through(next[0].sequence),
    );
}

async fn retention_deletes_final_carts_with_everything_kept_for_them(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let save = |mut cart: Cart, cmd: Command, k: Option<&'static str>| {
        let s = s.clone();
        let t = t.clone();
        async move {
            let mut u = s.begin(Isolation::Optimistic).await.unwrap();
            let k = k.map(|k| key(k, 1));
            change(u.as_mut(), &t, &mut cart, cmd, k.as_ref())
                .await
                .unwrap();
            u.commit().await.unwrap();
            cart
        }
    };
    let submit = || Command::Submit {
        expected_total: None,
    };
    let confirmed = new_cart("order-1");
    insert(&*s, &t, &confirmed).await;
    let confirmed = save(confirmed, submit(), Some("k-submit")).await;
    let confirmed = save(
        confirmed,
        Command::Confirm(Actor::Customer),
        Some("k-confirm"),
    )
    .await;
    assert_eq!(confirmed.status, CartStatus::Confirmed);
    assert_eq!(s.callbacks_of(&t, confirmed.id).await.unwrap().len(), 1);
    let cancelled = new_cart("");
    insert(&*s, &t, &cancelled).await;
    let cancel = Command::Cancel {
        actor: None,
        reason: "gone".into(),
    };
    let cancelled = save(cancelled, cancel, None).await;
    let active = new_cart("");
    insert(&*s, &t, &active).await;
    let active = save(active, clear(), Some("k-active")).await;
    let awaiting = new_cart("");
    insert(&*s, &t, &awaiting).await;
    let awaiting = save(awaiting, submit(), None).await;

    assert_eq!(
        s.purge_carts(now() - TimeDelta::hours(1), 10)
            .await
            .unwrap(),
        0,
        "none is that old"
    );
    let later = now() + TimeDelta::seconds(1);
    assert_eq!(s.purge_carts(later, 1).await.unwrap(), 1, "at most limit");
    assert_eq!(s.purge_carts(later, 10).await.unwrap(), 1);
    assert_eq!(s.purge_carts(later, 10).await.unwrap(), 0);

    for gone in [&confirmed, &cancelled] {
        assert!(matches!(
            s.get(&t, gone.id).await,
            Err(CartError::CartNotFound)
        ));
        assert!(matches!(
            s.current_event(&t, gone.id).await,
            Err(CartError::CartNotFound)
        ));
        assert!(s.cart_events(&t, gone.id, 0, 10).await.unwrap().is_empty());
        assert!(s.callbacks_of(&t, gone.id).await.unwrap().is_empty());
    }
    assert_eq!(s.get(&t, active.id).await.unwrap(), active);
    assert_eq!(s.get(&t, awaiting.id).await.unwrap(), awaiting);
    assert_eq!(
        versions(&s.cart_events(&t, active.id, 0, 10).await.unwrap()),
        [1, 2]
    );

    for (k, kept) in [
        ("k-submit", false),
        ("k-confirm", false),
        ("k-active", true),
    ] {
        assert_eq!(key_remembered(&*s, &t, k).await, kept, "key {k}");
    }
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    // The reference is free again.
    let again = new_cart("order-1");
    assert!(matches!(
        u.insert(&t, &again, [9; 32], None).await.unwrap(),
        Inserted::Created
    ));
    u.commit().await.unwrap();
}

async fn finished_deliveries_are_purged(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let mut carts = Vec::new();
    for _ in 0..2 {
        let mut cart = new_cart("");
        insert(&*s, &t, &cart).await;
        confirm(&*s, &t, &mut cart).await;
        carts.push(cart);
    }
    let later = now() + TimeDelta::seconds(1);
    assert_eq!(
        s.purge_deliveries(later, 10).await.unwrap(),
        0,
        "pending ones stay"
    );

    let open = Budget {
        default: 10,
        except: vec![],
    };
    let claim = Claim {
        limit: 10,
        lease_until: now() + TimeDelta::seconds(60),
        endpoints: open.clone(),
        tenants: open,
    };
    let claimed = s.claim_callbacks(&claim).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let gave_up = Outcome::GaveUp {
        status: Some(500),
        error: "no".into(),
    };
    s.record_callbacks(&[
        (claimed[0].id, Outcome::Delivered { status: 200 }),
        (claimed[1].id, gave_up),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.purge_deliveries(now() - TimeDelta::hours(1), 10)
            .await
            .unwrap(),
        0,
        "none finished that long ago"
    );
    let later = now() + TimeDelta::seconds(1);
    assert_eq!(s.purge_deliveries(later, 1).await.unwrap(), 1);
    assert_eq!(s.purge_deliveries(later, 10).await.unwrap(), 1);
    for cart in &carts {
        assert!(s.callbacks_of(&t, cart.id).await.unwrap().is_empty());
        assert_eq!(s.get(&t, cart.id).await.unwrap(), *cart, "the cart stays");
    }
}

crate::both_stores!(
    retention_deletes_old_events_but_each_carts_current_one,
    retention_deletes_final_carts_with_everything_kept_for_them,
    finished_deliveries_are_purged,
);

/// On Postgres a purge skips what an open transaction holds instead of
/// waiting for it, and never moves the compaction point past a sequence
/// that has not committed yet (sequences commit out of order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purges_neither_wait_for_writers_nor_pass_uncommitted_events() {
    let s = store(Backend::Postgres).await;
    let t = tenant("t");
    let (mut x, mut y, mut z) = (new_cart(""), new_cart(""), new_cart(""));
    for cart in [&x, &y, &z] {
        insert(&*s, &t, cart).await;
    }
    let cancel = Command::Cancel {
        actor: None,
        reason: "gone".into(),
    };
    save(&*s, &t, &mut z, cancel).await;
    settled(&*s).await;

    // A writer holds x and the final z, and has written x's v2 (not yet
    // committed); y's v2 commits after it, with a later sequence.
    let mut writer = s.begin(Isolation::Locked).await.unwrap();
    let mut held = writer.load(&t, &[x.id, z.id], None).await.unwrap();
    x = held.take(x.id).unwrap();
    change(writer.as_mut(), &t, &mut x, clear(), None)
        .await
        .unwrap();
    save(&*s, &t, &mut y, clear()).await;

    let later = now() + TimeDelta::seconds(1);
    let quick = Duration::from_secs(5);
    let purged = tokio::time::timeout(quick, s.purge_carts(later, 10))
        .await
        .expect("purge_carts does not wait for the writer");
    assert_eq!(purged.unwrap(), 0, "z is held: skipped");
    let deleted = tokio::time::timeout(quick, s.purge_events(later, 100))
        .await
        .expect("purge_events does not wait for the writer");
    assert_eq!(
        deleted.unwrap(),
        2,
        "y's v1 and z's v1; x's v1 is current as far as it can see"
    );
    let Err(CartError::EventsCompacted(Compacted::Through(through))) =
        s.tenant_events(&t, 0, 100).await
    else {
        panic!("the point moved");
    };

    writer.commit().await.unwrap();
    settled(&*s).await;
    // Nothing committed late was passed: resuming at the point sees x's v2.
    let after = s.tenant_events(&t, through, 100).await.unwrap();
    let seen: Vec<_> = after.iter().map(|e| (e.cart.id, e.version())).collect();
    assert_eq!(seen, [(x.id, 2), (y.id, 2)]);
    assert_eq!(s.purge_carts(later, 10).await.unwrap(), 1, "z, now free");
    assert_eq!(
        s.purge_events(now() + TimeDelta::seconds(1), 100)
            .await
            .unwrap(),
        1,
        "x's v1, kept as current, superseded since"
    );
    for cart in [&x, &y] {
        assert_compacted(
            s.cart_events(&t, cart.id, 0, 10).await,
            Compacted::OldestVersion(2),
        );
    }
}

/// Two replicas sweeping one database at once, while a writer changes
/// carts: every old event goes exactly once, each cart keeps its current
/// event, and every old final cart goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_purge_at_once() {
    let url = fresh_database().await;
    let (one, two) = (pg_store(&url).await, pg_store(&url).await);
    let t = tenant("t");
    let mut active = Vec::new();
    for n in 0..30 {
        let mut cart = new_cart("");
        insert(&*one, &t, &cart).await;
        for _ in 0..3 {
            save(&*one, &t, &mut cart, clear()).await;
        }
        if n % 3 == 0 {
            let cancel = Command::Cancel {
                actor: None,
                reason: "gone".into(),
            };
            save(&*one, &t, &mut cart, cancel).await;
        } else {
            active.push(cart);
        }
    }
    settled(&*one).await;
    settled(&*two).await;

    let writer = {
        let (s, t, mut carts) = (one.clone(), t.clone(), active.clone());
        tokio::spawn(async move {
            for _ in 0..3 {
                for cart in &mut carts {
                    save(&*s, &t, cart, clear()).await;
                }
            }
            carts
        })
    };
    let sweep = |s: Arc<dyn Store>| async move {
        // Until many rounds in a row find nothing (a round that found the
        // other replica holding the point also answers 0).
        let (mut carts, mut idle) = (0, 0);
        for _ in 0..2000 {
            let later = now() + TimeDelta::seconds(1);
            let c = s.purge_carts(later, 3).await.unwrap();
            let e = s.purge_events(later, 5).await.unwrap();
            carts += c;
            idle = if c + e == 0 { idle + 1 } else { 0 };
            if idle == 50 {
                break;
            }
        }
        carts
    };
    let both = async { tokio::join!(sweep(one.clone()), sweep(two.clone())) };
    let (a, b) = tokio::time::timeout(Duration::from_secs(120), both)
        .await
        .expect("the sweeps end");
    assert_eq!(a + b, 10, "each final cart deleted once");
    let active = writer.await.unwrap();

    // What the writer added last is passed by a last sweep.
    settled(&*one).await;
    while one
        .purge_events(now() + TimeDelta::seconds(1), 100)
        .await
        .unwrap()
        > 0
    {}
    for cart in &active {
        assert_eq!(cart.version, 7);
        assert_compacted(
            one.cart_events(&t, cart.id, 0, 10).await,
            Compacted::OldestVersion(7),
        );
        assert_eq!(
            versions(&one.cart_events(&t, cart.id, 6, 10).await.unwrap()),
            [7]
        );
    }
    let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = |q: &'static str| {
        let sql = &sql;
        async move { sql.query_one(q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM carts").await, 20);
    assert_eq!(
        count("SELECT count(*) FROM cart_events").await,
        20,
        "one event per cart: its current one"
    );
    assert_eq!(
        count("SELECT compacted_through FROM cart_events_compaction").await,
        count("SELECT max(sequence) FROM cart_events").await
    );
}
