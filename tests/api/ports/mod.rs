//! The port contracts (`cart_service::ports`), checked directly on every
//! adapter: the memory store and Postgres (a fresh database per test).
//! The gRPC suite checks the same behaviour through the use cases.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use cart_service::{
    domain::{
        Actor, Amount, Cart, CartError, CartStatus, Command, Compacted, ConfirmationType, Currency,
        IdempotencyKey, ItemInput, NewCart, Policy, TenantId, callback::callback_due, cart::Change,
        now,
    },
    ports::{
        Budget, Claim, Conflict, Inserted, Isolation, KeyRecord, ListQuery, Outcome, Store,
        UnitOfWork, Write,
    },
    store::{
        memory::MemoryStore,
        postgres::{PgOptions, PgStore},
    },
};
use chrono::TimeDelta;
use uuid::Uuid;

use crate::helpers::{Backend, fresh_database};

async fn store(b: Backend) -> Arc<dyn Store> {
    match b {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Postgres => pg_store(&fresh_database().await).await,
    }
}

/// A Postgres store (a replica) on the database at `url`.
async fn pg_store(url: &str) -> Arc<dyn Store> {
    let opts = PgOptions {
        url: url.to_string(),
        pool_size: 8,
        timeout: Duration::from_secs(10),
        cache_bytes: 1 << 20,
    };
    Arc::new(PgStore::connect(&opts).await.expect("Postgres store"))
}

fn tenant(name: &str) -> TenantId {
    TenantId(name.into())
}

fn new_cart(reference: &str) -> Cart {
    let new = NewCart {
        customer_id: "c1".into(),
        reference: reference.into(),
        currency: Currency::parse("USD").unwrap(),
        country: None,
        channel: "default".into(),
        description: String::new(),
        metadata: BTreeMap::new(),
        confirmation_type: ConfirmationType::Automatic,
        callback_url: "http://127.0.0.1:9/ok".into(),
        callback_cancel_url: String::new(),
        items: vec![ItemInput {
            sku: "TEA".into(),
            name: "Tea".into(),
            quantity: 1,
            unit_price: Amount::parse("2.50", "unit_price").unwrap(),
            list_price: None,
            attributes: BTreeMap::new(),
        }],
    };
    Cart::create(Uuid::new_v4(), new, now(), &Policy::default()).unwrap()
}

fn key(k: &str, fingerprint: u8) -> IdempotencyKey {
    IdempotencyKey {
        key: k.into(),
        fingerprint: [fingerprint; 32],
    }
}

/// Inserts `cart` for `t` in a unit of its own.
async fn insert(s: &dyn Store, t: &TenantId, cart: &Cart) {
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let inserted = u.insert(t, cart, [0; 32], None).await.unwrap();
    assert!(matches!(inserted, Inserted::Created));
    u.commit().await.unwrap();
}

/// Applies `cmd` to `cart` and saves it through `u` (which loads the cart
/// first, as the contract asks; `cart` may be older than what it loads).
async fn change(
    u: &mut dyn UnitOfWork,
    t: &TenantId,
    cart: &mut Cart,
    cmd: Command,
    k: Option<&IdempotencyKey>,
) -> Result<(), Conflict> {
    u.load(t, &[cart.id], None).await?;
    let at = now();
    let change: Change = cart.apply(&cmd, 0, at, &Policy::default()).unwrap();
    let write = Write {
        cart,
        change,
        at,
        callback: callback_due(cart, change, at),
    };
    let key = k.map(|key| KeyRecord {
        key,
        response: cart,
    });
    u.save(t, &write, key).await
}

fn clear() -> Command {
    Command::Clear
}

async fn a_save_writes_only_over_the_version_it_read(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let cart = new_cart("");
    insert(&*s, &t, &cart).await;

    let mut first = cart.clone();
    let mut stale = cart.clone();
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    change(u.as_mut(), &t, &mut first, clear(), None)
        .await
        .unwrap();
    u.commit().await.unwrap();

    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let lost = change(u.as_mut(), &t, &mut stale, clear(), None).await;
    assert!(matches!(lost, Err(Conflict::Raced)), "{lost:?}");
    u.commit().await.unwrap();
    assert_eq!(s.get(&t, cart.id).await.unwrap(), first);
    let events = s.cart_events(&t, cart.id, 0, 10).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.version()).collect();
    assert_eq!(
        versions,
        [1, 2],
        "one event per version, none for the lost write"
    );
}

async fn a_locked_unit_commits_everything_or_nothing(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let (a, b2) = (new_cart(""), new_cart(""));
    insert(&*s, &t, &a).await;
    insert(&*s, &t, &b2).await;

    for commit in [false, true] {
        let mut u = s.begin(Isolation::Locked).await.unwrap();
        let mut loaded = u.load(&t, &[a.id, b2.id], None).await.unwrap();
        let (mut ca, mut cb) = (loaded.take(a.id).unwrap(), loaded.take(b2.id).unwrap());
        change(u.as_mut(), &t, &mut ca, clear(), None)
            .await
            .unwrap();
        change(u.as_mut(), &t, &mut cb, clear(), None)
            .await
            .unwrap();
        if commit {
            u.commit().await.unwrap();
        } else {
            u.rollback().await;
        }
        let expected = if commit { 2 } else { 1 };
        assert_eq!(s.get(&t, a.id).await.unwrap().version, expected);
        assert_eq!(s.get(&t, b2.id).await.unwrap().version, expected);
    }
}

async fn a_unit_dropped_midway_writes_nothing(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let cart = new_cart("");
    insert(&*s, &t, &cart).await;
    // As when a call is cancelled between its save and its commit.
    for _ in 0..20 {
        let mut u = s.begin(Isolation::Locked).await.unwrap();
        let mut held = u
            .load(&t, &[cart.id], None)
            .await
            .unwrap()
            .take(cart.id)
            .unwrap();
        change(u.as_mut(), &t, &mut held, clear(), None)
            .await
            .unwrap();
        drop(u);
    }
    assert_eq!(s.get(&t, cart.id).await.unwrap(), cart);
    // Nothing was left locked or half-open: the next writer goes through.
    let mut next = cart.clone();
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    change(u.as_mut(), &t, &mut next, clear(), None)
        .await
        .unwrap();
    u.commit().await.unwrap();
    assert_eq!(s.get(&t, cart.id).await.unwrap().version, 2);
}

async fn a_locked_cart_waits_for_its_unit_to_end(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let cart = new_cart("");
    insert(&*s, &t, &cart).await;

    let mut holder = s.begin(Isolation::Locked).await.unwrap();
    let mut held = holder
        .load(&t, &[cart.id], None)
        .await
        .unwrap()
        .take(cart.id)
        .unwrap();
    let other = {
        let (s, t, mut stale) = (s.clone(), t.clone(), cart.clone());
        tokio::spawn(async move {
            let mut u = s.begin(Isolation::Optimistic).await.unwrap();
            let r = change(u.as_mut(), &t, &mut stale, clear(), None).await;
            u.commit().await.unwrap();
            r
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!other.is_finished(), "a writer went past the lock");
    change(holder.as_mut(), &t, &mut held, clear(), None)
        .await
        .unwrap();
    holder.commit().await.unwrap();
    let r = other.await.unwrap();
    assert!(matches!(r, Err(Conflict::Raced)), "{r:?}");
    assert_eq!(s.get(&t, cart.id).await.unwrap(), held);
}

async fn a_key_is_recorded_once_with_its_answer(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let mut cart = new_cart("");
    insert(&*s, &t, &cart).await;
    let k = key("k1", 7);

    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let before = now();
    change(u.as_mut(), &t, &mut cart, clear(), Some(&k))
        .await
        .unwrap();
    u.commit().await.unwrap();

    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let loaded = u.load(&t, &[], Some("k1")).await.unwrap();
    let r = loaded.remembered.expect("the key is remembered");
    assert_eq!(r.fingerprint, vec![7; 32]);
    assert_eq!(r.response, cart);
    assert!(r.recorded_at >= before - TimeDelta::seconds(1));
    let mut again = cart.clone();
    let taken = change(u.as_mut(), &t, &mut again, clear(), Some(&k)).await;
    assert!(matches!(taken, Err(Conflict::KeyTaken)), "{taken:?}");
    u.commit().await.unwrap();
    assert_eq!(
        s.get(&t, cart.id).await.unwrap().version,
        2,
        "nothing written"
    );

    let other = tenant("other");
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let theirs = u.load(&other, &[cart.id], Some("k1")).await.unwrap();
    assert!(theirs.carts.is_empty() && theirs.remembered.is_none());
    u.commit().await.unwrap();

    s.forget_key(&t, "k1", before - TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(
        s.forget_keys_before(before - TimeDelta::hours(1), 10)
            .await
            .unwrap(),
        0
    );
    assert!(key_remembered(&*s, &t, "k1").await, "a younger key stays");
    assert_eq!(
        s.forget_keys_before(now() + TimeDelta::seconds(1), 10)
            .await
            .unwrap(),
        1
    );
    assert!(!key_remembered(&*s, &t, "k1").await);
}

async fn a_reference_names_one_cart_per_tenant(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let first = new_cart("order-1");
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    assert!(matches!(
        u.insert(&t, &first, [1; 32], None).await.unwrap(),
        Inserted::Created
    ));
    let second = new_cart("order-1");
    match u.insert(&t, &second, [2; 32], None).await.unwrap() {
        Inserted::ReferenceTaken { cart, fingerprint } => {
            assert_eq!(*cart, first);
            assert_eq!(fingerprint, vec![1; 32]);
        }
        other => panic!("{other:?}"),
    }
    // Another tenant has references of its own.
    assert!(matches!(
        u.insert(&tenant("u"), &second, [2; 32], None)
            .await
            .unwrap(),
        Inserted::Created
    ));
    u.commit().await.unwrap();
    assert!(matches!(
        s.get(&t, second.id).await,
        Err(CartError::CartNotFound)
    ));
    let page = s
        .list(
            &t,
            &ListQuery {
                customer_id: String::new(),
                statuses: vec![],
                page_size: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.carts, vec![first]);
}

async fn due_carts_are_found_for_expiry(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let cart = new_cart("");
    insert(&*s, &t, &cart).await;
    let mut u = s.begin(Isolation::Locked).await.unwrap();
    assert!(
        u.load_expired(now(), 10).await.unwrap().is_empty(),
        "not due yet"
    );
    let due = u
        .load_expired(cart.expires_at.unwrap() + TimeDelta::seconds(1), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![(t.clone(), cart)]);
    u.commit().await.unwrap();
}

/// Waits until the feed's head has passed every event committed so far.
async fn settled(s: &dyn Store) {
    let target = s.head_now().await.unwrap();
    for _ in 0..500 {
        if s.feed().head() >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the feed's head did not reach {target}");
}

async fn the_log_answers_each_tenants_events_in_order(b: Backend) {
    let s = store(b).await;
    let (t, other) = (tenant("t"), tenant("other"));
    let mut mine = new_cart("");
    let theirs = new_cart("");
    insert(&*s, &t, &mine).await;
    insert(&*s, &other, &theirs).await;
    for _ in 0..3 {
        let mut u = s.begin(Isolation::Optimistic).await.unwrap();
        change(u.as_mut(), &t, &mut mine, clear(), None)
            .await
            .unwrap();
        u.commit().await.unwrap();
    }
    settled(&*s).await;
    let all = s.tenant_events(&t, 0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|e| e.tenant == t && e.cart.id == mine.id));
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let after = s.tenant_events(&t, all[1].sequence, 1).await.unwrap();
    assert_eq!(
        after,
        vec![all[2].clone()],
        "after a sequence, at most limit"
    );
    let versions: Vec<i64> = s
        .cart_events(&t, mine.id, 1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version())
        .collect();
    assert_eq!(versions, [2, 3, 4]);
    let current = s.current_event(&t, mine.id).await.unwrap();
    assert_eq!(current.cart, mine);
    assert!(matches!(
        s.current_event(&other, mine.id).await,
        Err(CartError::CartNotFound)
    ));
}

async fn a_claimed_callback_is_leased_to_one_worker(b: Backend) {
    let s = store(b).await;
    let t = tenant("t");
    let mut cart = new_cart("");
    insert(&*s, &t, &cart).await;
    let written = s.callbacks_written();
    confirm(&*s, &t, &mut cart).await;
    tokio::time::timeout(Duration::from_secs(10), written.notified())
        .await
        .expect("a committed callback wakes the workers");
    let backlog = s.callback_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.due), (1, 1));

    let lease = now() + TimeDelta::seconds(60);
    let open = Budget {
        default: 10,
        except: vec![],
    };
    let claim = Claim {
        limit: 10,
        lease_until: lease,
        endpoints: open.clone(),
        tenants: open,
    };
    let closed = Claim {
        endpoints: Budget {
            default: 10,
            except: vec![("127.0.0.1:9".into(), 0)],
        },
        ..claim.clone()
    };
    assert!(
        s.claim_callbacks(&closed).await.unwrap().is_empty(),
        "endpoint closed"
    );
    let claimed = s.claim_callbacks(&claim).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].tenant.clone(), claimed[0].attempts),
        (t.clone(), 1)
    );
    assert!(claimed[0].body.contains(&cart.id.to_string()));
    assert!(
        s.claim_callbacks(&claim).await.unwrap().is_empty(),
        "leased"
    );

    let retry = Outcome::Retry {
        at: now() - TimeDelta::seconds(1),
        status: Some(503),
        error: "busy".into(),
    };
    s.record_callbacks(&[(claimed[0].id, retry)]).await.unwrap();
    let again = s.claim_callbacks(&claim).await.unwrap();
    assert_eq!((again[0].id, again[0].attempts), (claimed[0].id, 2));
    s.record_callbacks(&[(again[0].id, Outcome::Delivered { status: 200 })])
        .await
        .unwrap();
    let states = s.callbacks_of(&t, cart.id).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(
        (
            states[0].state.as_str(),
            states[0].attempts,
            states[0].last_status
        ),
        ("delivered", 2, Some(200))
    );
    assert!(
        s.callbacks_of(&tenant("other"), cart.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Applies `cmd` to `cart` in a unit of its own.
async fn save(s: &dyn Store, t: &TenantId, cart: &mut Cart, cmd: Command) {
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    change(u.as_mut(), t, cart, cmd, None).await.unwrap();
    u.commit().await.unwrap();
}

/// Submits `cart` and confirms it as the customer, each in a unit of its own.
async fn confirm(s: &dyn Store, t: &TenantId, cart: &mut Cart) {
    let submit = Command::Submit {
        expected_total: None,
    };
    save(s, t, cart, submit).await;
    save(s, t, cart, Command::Confirm(Actor::Customer)).await;
    assert_eq!(cart.status, CartStatus::Confirmed);
}

/// Whether `key` of `t` is remembered.
async fn key_remembered(s: &dyn Store, t: &TenantId, key: &str) -> bool {
    let mut u = s.begin(Isolation::Optimistic).await.unwrap();
    let remembered = u.load(t, &[], Some(key)).await.unwrap().remembered;
    u.commit().await.unwrap();
    remembered.is_some()
}

mod retention;

crate::both_stores!(
    a_save_writes_only_over_the_version_it_read,
    a_locked_unit_commits_everything_or_nothing,
    a_locked_cart_waits_for_its_unit_to_end,
    a_unit_dropped_midway_writes_nothing,
    a_key_is_recorded_once_with_its_answer,
    a_reference_names_one_cart_per_tenant,
    due_carts_are_found_for_expiry,
    the_log_answers_each_tenants_events_in_order,
    a_claimed_callback_is_leased_to_one_worker,
);
