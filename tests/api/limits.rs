//! Bounds on what one caller can make a replica hold: watch streams per
//! tenant, the encoded size of a cart, the size of a ListCarts page, and
//! deadlines that end waiting without doing the work.

use std::time::{Duration, Instant};

use cart_service::proto::{
    self, AddItemsRequest, CreateCartRequest, GetCartRequest, ListCartsRequest, WatchCartRequest,
    WatchCartsRequest,
};
use prost::Message;
use tonic::Code;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, assert_error, create_cart, fresh_database, get, item, keys, spawn_app,
        spawn_app_with,
    },
    operations::postgres_addr,
    proxy::Proxy,
};

async fn watch_carts(
    c: &mut Client,
) -> Result<tonic::Streaming<cart_service::proto::CartEvent>, tonic::Status> {
    c.watch_carts(WatchCartsRequest::default())
        .await
        .map(|r| r.into_inner())
}

async fn watch_streams_are_capped_per_tenant(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")]);
        c.max_watchers_per_tenant = 2;
    })
    .await;
    let mut a = app.client_with_key(Some("key-a"));
    let cart = create_cart(&mut a, vec![]).await;
    let first = watch_carts(&mut a).await.unwrap();
    let mut second = a
        .watch_cart(WatchCartRequest {
            cart_id: cart.id.clone(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    crate::helpers::next(&mut second).await;
    for _ in 0..2 {
        assert_error(
            watch_carts(&mut a).await,
            Code::ResourceExhausted,
            "TOO_MANY_WATCHERS",
        );
        assert_error(
            a.watch_cart(WatchCartRequest {
                cart_id: cart.id.clone(),
                after_version: 0,
            })
            .await,
            Code::ResourceExhausted,
            "TOO_MANY_WATCHERS",
        );
    }
    // Another tenant has its own cap.
    let mut other = app.client_with_key(Some("key-b"));
    let _theirs = watch_carts(&mut other).await.unwrap();
    // A stream the client drops frees its slot (no event needed to notice).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    let _third = loop {
        match watch_carts(&mut a).await {
            Ok(s) => break s,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(
                    Instant::now() < deadline,
                    "the dropped stream kept its slot"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Four refusals above, and any while the dropped stream was closing.
    let text = app.metrics.render(None, 0);
    let shed = crate::scopes::metric(
        &text,
        r#"cart_shed_calls_total{tenant="a",reason="TOO_MANY_WATCHERS"}"#,
    );
    assert!(shed >= Some(4), "{text}");
}

/// `n` lines of about 66 KB each: 64 attributes of 1,000 characters.
fn heavy_items(prefix: &str, n: usize) -> Vec<proto::ItemInput> {
    (0..n)
        .map(|i| {
            let mut it = item(&format!("{prefix}-{i}"), 1, "1.00");
            for a in 0..64 {
                it.attributes
                    .insert(format!("attr-{a:02}"), "x".repeat(1_000));
            }
            it
        })
        .collect()
}

const MIB: usize = 1024 * 1024;

async fn a_cart_grown_toward_the_size_bound_is_refused_and_stays_readable(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let mut refused = None;
    // 4 lines (~265 KB) a call: the bound (1 MiB) is met within 5 calls.
    for call in 0..8 {
        let add = AddItemsRequest {
            cart_id: cart.id.clone(),
            items: heavy_items(&format!("c{call}"), 4),
            ..Default::default()
        };
        match c.add_items(add).await {
            Ok(_) => continue,
            Err(e) => {
                refused = Some(assert_error(
                    Err::<(), _>(e),
                    Code::FailedPrecondition,
                    "CART_TOO_LARGE",
                ));
                break;
            }
        }
    }
    assert!(refused.is_some(), "the cart grew past 1 MiB");
    // The default client (4 MiB per message) reads it, and it is within the bound.
    let now = get(&mut c, &cart.id).await;
    assert!(now.encoded_len() <= MIB, "{} bytes", now.encoded_len());
    assert!(now.items.len() >= 12, "{} lines", now.items.len());
    // Small changes that do not grow it still work: remove a line.
    let removed = c
        .remove_items(proto::RemoveItemsRequest {
            cart_id: cart.id.clone(),
            skus: vec![now.items[0].sku.clone()],
            ..Default::default()
        })
        .await
        .expect("shrinking is allowed")
        .into_inner();
    assert_eq!(removed.version, now.version + 1);
}

async fn list_carts_pages_stay_within_4_mib(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut made = Vec::new();
    // 9 carts of about 0.9 MiB each: 8 MiB, two pages at least.
    for i in 0..9 {
        let cart = c
            .create_cart(CreateCartRequest {
                currency: "USD".into(),
                items: heavy_items(&format!("cart{i}"), 13),
                ..Default::default()
            })
            .await
            .expect("a cart under 1 MiB")
            .into_inner();
        assert!(cart.encoded_len() > 800_000, "{}", cart.encoded_len());
        made.push(cart.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_carts(ListCartsRequest {
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page a default client can read")
            .into_inner();
        pages += 1;
        assert!(
            page.encoded_len() <= 4 * MIB,
            "{} bytes",
            page.encoded_len()
        );
        assert!(!page.carts.is_empty());
        seen.extend(page.carts.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert!(pages >= 3, "9 carts of 0.9 MiB need 3 pages, got {pages}");
    made.reverse();
    assert_eq!(seen, made, "newest first, each cart once");
}

/// With Postgres stalled and the only connection taken, a call with a
/// deadline gives up waiting at its deadline and leaves no write behind
/// once the store is back. (A call arriving with no time left is refused
/// before any work: `grpc::deadline` unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_does_no_write() {
    let db = fresh_database().await;
    let proxy = Proxy::start(postgres_addr()).await;
    let name = db.rsplit('/').next().unwrap().to_string();
    let url = format!("postgres://postgres@{}/{name}", proxy.addr);
    let app = spawn_app_with(Backend::Memory, |c| {
        c.database_url = Some(url);
        c.db_pool_size = 1;
        // Longer than the test: only the deadline can end the wait.
        c.db_timeout = Duration::from_secs(60);
    })
    .await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![item("A", 1, "1")]).await;

    proxy.pause();
    // A call without a deadline takes the only connection and stalls on it.
    let mut stalled = c.clone();
    let id = cart.id.clone();
    let first = tokio::spawn(async move { get(&mut stalled, &id).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .pool
        .as_ref()
        .map(|p| p())
        .is_none_or(|p| p.available > 0)
    {
        assert!(
            Instant::now() < deadline,
            "the first call never took the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let add = |timeout: Duration| {
        let mut req = tonic::Request::new(AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item("LATE", 1, "1")],
            ..Default::default()
        });
        req.set_timeout(timeout);
        req
    };
    let start = Instant::now();
    let late = c
        .add_items(add(Duration::from_millis(300)))
        .await
        .expect_err("the call cannot finish while Postgres is stalled");
    // The server's answer (DEADLINE_EXCEEDED with its reason) races the
    // client's own timer at the same deadline (tonic reports CANCELLED).
    // Either way (its deadline, or the client leaving) the server drops the call.
    match late.code() {
        Code::DeadlineExceeded => {
            assert_error(
                Err::<(), _>(late),
                Code::DeadlineExceeded,
                "DEADLINE_EXCEEDED",
            );
            let series = r#"cart_shed_calls_total{tenant="default",reason="DEADLINE_EXCEEDED"}"#;
            let shed = crate::scopes::metric(&app.metrics.render(None, 0), series);
            assert_eq!(shed, Some(1));
        }
        Code::Cancelled => {}
        other => panic!("{other:?}: {late:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    proxy.resume();
    first.await.unwrap();
    let now = get(&mut c, &cart.id).await;
    assert_eq!(now.version, cart.version, "no write happened");
    assert!(now.items.iter().all(|l| l.sku != "LATE"));
}

/// Past its bound a replica refuses at once (OVERLOADED), and a tenant
/// holding every slot does not keep another tenant out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_calls_fail_fast_but_a_quiet_tenant_gets_in() {
    let db = fresh_database().await;
    let proxy = Proxy::start(postgres_addr()).await;
    let name = db.rsplit('/').next().unwrap().to_string();
    let url = format!("postgres://postgres@{}/{name}", proxy.addr);
    let app = spawn_app_with(Backend::Memory, |c| {
        c.database_url = Some(url);
        c.api_keys = keys(&[("a", "key-a"), ("b", "key-b")]);
        c.max_in_flight = 2;
        c.db_timeout = Duration::from_secs(60);
    })
    .await;
    let (mut a, mut b) = (
        app.client_with_key(Some("key-a")),
        app.client_with_key(Some("key-b")),
    );
    let cart = create_cart(&mut a, vec![]).await;
    proxy.pause();
    // Tenant A fills the replica with two calls stalled on Postgres (each
    // retried while refused, as a client with backoff would).
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut c = a.clone();
            let id = cart.id.clone();
            tokio::spawn(async move {
                loop {
                    match c
                        .get_cart(GetCartRequest {
                            cart_id: id.clone(),
                        })
                        .await
                    {
                        Err(s) if s.code() == Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        r => return r.expect("answered once Postgres is back"),
                    }
                }
            })
        })
        .collect();
    // Once both hold their slots, another call of A is refused at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut req = tonic::Request::new(ListCartsRequest::default());
        req.set_timeout(Duration::from_millis(100));
        let start = Instant::now();
        match a.list_carts(req).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert_error(Err::<(), _>(s), Code::ResourceExhausted, "OVERLOADED");
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{:?}",
                    start.elapsed()
                );
                break;
            }
            _ => assert!(Instant::now() < deadline, "A was never refused"),
        }
    }
    let series = r#"cart_shed_calls_total{tenant="a",reason="OVERLOADED"}"#;
    assert!(crate::scopes::metric(&app.metrics.render(None, 0), series) >= Some(1));
    // Tenant B is admitted (its call then waits on the stalled store until its deadline).
    let mut req = tonic::Request::new(ListCartsRequest::default());
    req.set_timeout(Duration::from_millis(300));
    let r = b.list_carts(req).await.expect_err("Postgres is stalled");
    assert!(
        matches!(r.code(), Code::DeadlineExceeded | Code::Cancelled),
        "B was admitted, not refused: {r:?}"
    );
    proxy.resume();
    for s in stalled {
        s.await.unwrap();
    }
    // Capacity is back once the stalled calls are answered.
    a.list_carts(ListCartsRequest::default()).await.unwrap();
}

both_stores!(
    watch_streams_are_capped_per_tenant,
    a_cart_grown_toward_the_size_bound_is_refused_and_stays_readable,
    list_carts_pages_stay_within_4_mib,
);
