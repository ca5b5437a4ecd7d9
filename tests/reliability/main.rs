//! Long fault scenarios, run by `scripts/reliability` (not by the normal
//! suite): a kill -9 loop under load, and a Postgres restart under load.
//! They need RELIABILITY_DATABASE_URL (an admin URL of a Postgres of their
//! own) and RELIABILITY_PG_RESTART (a shell command that restarts it).

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cart_service::proto::{
    AddItemsRequest, CartStatus, CreateCartRequest, GetCartRequest, ItemInput, WatchCartsRequest,
    cart_service_client::CartServiceClient,
};
use tokio::process::{Child, Command};
use tonic::{Code, transport::Channel};

type Client = CartServiceClient<Channel>;

mod callbacks;
#[allow(dead_code)] // shared with tests/api, which uses all of it
#[path = "../api/receiver.rs"]
mod receiver;
mod watchers;

fn admin_url() -> String {
    std::env::var("RELIABILITY_DATABASE_URL")
        .expect("RELIABILITY_DATABASE_URL (run scripts/reliability)")
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("reliability tests need Postgres at {url}: {e}"));
    tokio::spawn(conn);
    client
}

async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!("cart_rel_{}", uuid::Uuid::new_v4().simple());
    sql(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real binary and waits until it answers.
async fn start_server(db: &str, port: u16) -> (Child, Client) {
    start_server_with(db, port, &[]).await
}

/// Starts the real binary with extra environment and waits until it answers.
async fn start_server_with(db: &str, port: u16, env: &[(&str, &str)]) -> (Child, Client) {
    let child = Command::new(env!("CARGO_BIN_EXE_cart-service"))
        .envs(env.iter().copied())
        .env("DATABASE_URL", db)
        .env("CART_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("CART_METRICS_ADDR", "127.0.0.1:0")
        .env("CART_DB_TIMEOUT", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start cart-service");
    let start = Instant::now();
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return (child, CartServiceClient::new(ch));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn line(sku: String) -> ItemInput {
    ItemInput {
        sku,
        quantity: 1,
        unit_price: "1.00".into(),
        ..Default::default()
    }
}

/// Every cart's event log matches its version: one event per version, 1..=v.
async fn check_versions_match_events(db: &str) -> usize {
    let c = sql(db).await;
    let rows = c
        .query(
            "SELECT c.id, c.version, count(e.*), min(e.version), max(e.version) FROM carts c \
             JOIN cart_events e ON e.cart_id = c.id GROUP BY c.id, c.version",
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        let (v, n, lo, hi): (i64, i64, i64, i64) = (r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(
            (n, lo, hi),
            (v, 1, v),
            "cart {} has version {v} but events {n} ({lo}..={hi})",
            r.get::<_, uuid::Uuid>(0)
        );
    }
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_change() {
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 16;
    const PER_ROUND: usize = 200;
    let db = fresh_database().await;
    let port = free_port();
    let acked: Arc<Mutex<HashMap<String, HashSet<String>>>> = Default::default();
    let mut carts = Vec::new();
    let (mut server, mut client) = start_server(&db, port).await;
    for _ in 0..CLIENTS * 4 {
        let cart = client
            .create_cart(CreateCartRequest::default())
            .await
            .unwrap()
            .into_inner();
        carts.push(cart.id);
    }
    let mut total_acked = 0usize;
    let mut total_failed = 0usize;
    for round in 0..ROUNDS {
        // Bounded by counts, not time: each worker makes at most PER_ROUND
        // changes (its 4 carts stay far below 500 lines on any machine) and
        // the server is killed once a quarter of them are acknowledged, so
        // the kill lands while writes are in flight.
        let round_acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|w| {
                let mut c = client.clone();
                let carts = carts.clone();
                let acked = acked.clone();
                let round_acked = round_acked.clone();
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, 0);
                    for i in 0..PER_ROUND {
                        let cart = carts[(w * 4 + i % 4) % carts.len()].clone();
                        let sku = format!("r{round}w{w}i{i}");
                        let req = AddItemsRequest {
                            cart_id: cart.clone(),
                            items: vec![line(sku.clone())],
                            ..Default::default()
                        };
                        match c.add_items(req).await {
                            Ok(_) => {
                                ok += 1;
                                round_acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                acked.lock().unwrap().entry(cart).or_default().insert(sku);
                            }
                            Err(_) => {
                                failed += 1;
                                if failed > 3 {
                                    break; // the server is gone
                                }
                            }
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while round_acked.load(std::sync::atomic::Ordering::Relaxed) < CLIENTS * PER_ROUND / 4 {
            assert!(Instant::now() < deadline, "no progress before the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.start_kill().expect("kill -9"); // SIGKILL
        let _ = server.wait().await;
        for w in workers {
            let (ok, failed) = w.await.unwrap();
            total_acked += ok;
            total_failed += failed;
        }
        (server, client) = start_server(&db, port).await;
    }
    // Every acknowledged line is there, exactly once.
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for (cart, skus) in &acked {
        let got = client
            .get_cart(GetCartRequest {
                cart_id: cart.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let have: HashMap<_, _> = got
            .items
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect();
        for sku in skus {
            if have.get(sku) != Some(&1) {
                lost += 1;
            }
        }
        assert!(got.items.len() >= skus.len());
    }
    let carts_checked = check_versions_match_events(&db).await;
    println!(
        "kill -9 x{ROUNDS}: {total_acked} AddItems acknowledged, {total_failed} failed in flight, \
         {lost} acknowledged changes lost, {carts_checked} carts with versions = events"
    );
    assert_eq!(lost, 0, "acknowledged changes lost");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_is_survived_by_the_same_process() {
    let restart = std::env::var("RELIABILITY_PG_RESTART")
        .expect("RELIABILITY_PG_RESTART (run scripts/reliability)");
    let db = fresh_database().await;
    let port = free_port();
    let (server, mut client) = start_server(&db, port).await;
    let cart = client
        .create_cart(CreateCartRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut watch = client
        .watch_carts(WatchCartsRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Load: one writer adding lines, recording outcomes and latencies.
    const SKUS: usize = 100;
    const WRITES_PER_PHASE: usize = 200;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let oks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let mut c = client.clone();
        let id = cart.id.clone();
        let done = done.clone();
        let oks = oks.clone();
        tokio::spawn(async move {
            let (mut unavailable, mut other, mut slowest_failure) = (0, 0, Duration::ZERO);
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                // SKUs cycle: however fast the machine, the cart stays at
                // SKUS lines (a repeated SKU is still a change and an event).
                let r = c
                    .add_items(AddItemsRequest {
                        cart_id: id.clone(),
                        items: vec![line(format!("p{}", i % SKUS))],
                        ..Default::default()
                    })
                    .await;
                i += 1;
                match r {
                    Ok(_) => {
                        oks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        unavailable += 1;
                        slowest_failure = slowest_failure.max(t.elapsed());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(s) => {
                        other += 1;
                        eprintln!("unexpected: {s:?}");
                    }
                }
            }
            (unavailable, other, slowest_failure)
        })
    };
    // Phases bounded by counts of acknowledged writes, not by time.
    let wait_for_oks = |n: usize| {
        let oks = oks.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while oks.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "fewer than {n} writes in 60 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for_oks(WRITES_PER_PHASE).await;
    let restarted = Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&restart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down_for = restarted.elapsed();
    let before = oks.load(std::sync::atomic::Ordering::Relaxed);
    wait_for_oks(before + WRITES_PER_PHASE).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (unavailable, other, slowest) = writer.await.unwrap();
    let ok = oks.load(std::sync::atomic::Ordering::Relaxed);

    // The same process serves again.
    let after = client
        .get_cart(GetCartRequest {
            cart_id: cart.id.clone(),
        })
        .await
        .expect("serves after restart")
        .into_inner();
    assert_eq!(after.status(), CartStatus::Active);

    // The watcher: continue (or resume) from the last sequence; nothing missed.
    let mut seen = Vec::new();
    let mut last = 0;
    let expected = after.version - 1; // every ITEMS_CHANGED after CREATED
    let deadline = Instant::now() + Duration::from_secs(20);
    while (seen.len() as i64) < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), watch.message()).await {
            Ok(Ok(Some(ev))) => {
                last = ev.sequence;
                seen.push(ev.version);
            }
            _ => {
                watch = client
                    .watch_carts(WatchCartsRequest {
                        statuses: vec![],
                        after_sequence: last,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner())
                    .unwrap_or(watch);
            }
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    println!(
        "postgres restart ({down_for:?} to restart): {ok} AddItems OK, {unavailable} UNAVAILABLE \
         (slowest {slowest:?}), {other} other errors, watcher saw {} of {expected} changes, {} twice",
        unique.len(),
        seen.len() - unique.len()
    );
    assert_eq!(other, 0, "only UNAVAILABLE while Postgres is down");
    assert!(
        slowest < Duration::from_secs(3),
        "failures come fast: {slowest:?}"
    );
    assert_eq!(unique.len() as i64, expected, "the watcher missed nothing");
    assert_eq!(seen.len(), unique.len(), "and saw nothing twice");
    check_versions_match_events(&db).await;
    drop(server);
}
