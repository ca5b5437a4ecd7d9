//! One clock across replicas: a replica whose machine clock is 20 minutes
//! fast (libfaketime, as after an NTP failure) stamps and expires with the
//! database's clock, so it neither expires another replica's carts early
//! nor stamps times in the future.

use std::{process::Stdio, time::Duration};

use cart_service::proto::{self, cart_service_client::CartServiceClient};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{create_cart, fresh_database, get, spawn_app_on, status, submit};

/// libfaketime, preloaded into the replica itself (the `faketime` wrapper
/// would run it as a child of its own, which outlives a killed wrapper).
fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.exists());
    found.expect("this test needs libfaketime (apt-get install faketime)")
}

fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("a timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// Within a minute of this machine's clock (the skew under test is 20).
fn assert_near_now(t: DateTime<Utc>, what: &str) {
    let off = (t - Utc::now()).num_seconds().abs();
    assert!(off < 60, "{what} is {off} s away from now: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_fast_clock_keeps_the_databases_time() {
    let db = fresh_database().await;
    // Replica A: this machine's clock, a 15-minute checkout, no sweeper of
    // its own (an hour between sweeps), so every expiry below is B's doing.
    let a = spawn_app_on(&db, |c| {
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let mut on_a = a.client.clone();

    // Replica B: 20 minutes fast, a 1 s checkout, sweeping every 50 ms.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-service"))
        .args(["--log-format", "json"])
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "+20m")
        .env("CART_LISTEN_ADDR", "127.0.0.1:0")
        .env("CART_METRICS_ADDR", "127.0.0.1:0")
        .env("CART_CHECKOUT_TIMEOUT", "1s")
        .env("CART_SWEEP_INTERVAL", "50ms")
        .env("DATABASE_URL", &db)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start replica B");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("replica B starts in time")
            .unwrap()
            .expect("replica B is running");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if json["message"] == "cart service listening" {
            break json["addr"].as_str().unwrap().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let mut on_b = CartServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to replica B");

    // A submits X: it awaits the customer for 15 minutes.
    let x = create_cart(&mut on_a, vec![crate::helpers::item("A", 1, "1")]).await;
    let x = submit(&mut on_a, &x.id).await;

    // B creates and submits W: its times are the database's, not B's.
    let w = on_b
        .create_cart(proto::CreateCartRequest {
            items: vec![crate::helpers::item("A", 1, "1")],
            ..Default::default()
        })
        .await
        .expect("create on B")
        .into_inner();
    assert_near_now(time(&w.created_at), "created_at stamped by B");
    let w = on_b
        .submit_cart(proto::SubmitCartRequest {
            cart_id: w.id.clone(),
            ..Default::default()
        })
        .await
        .expect("submit on B")
        .into_inner();
    assert_near_now(time(&w.updated_at), "updated_at stamped by B");
    assert_near_now(time(&w.expires_at), "expires_at stamped by B");

    // B's sweeper expires W a second later (its checkout is 1 s), which
    // shows it has swept since; X, 15 minutes from expiry, stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = get(&mut on_a, &w.id).await;
        if status(&now) == proto::CartStatus::Expired {
            assert_near_now(time(&now.updated_at), "the expiry B stamped");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never expired W: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let x_now = get(&mut on_a, &x.id).await;
    assert_eq!(
        status(&x_now),
        proto::CartStatus::AwaitingCustomer,
        "B expired A's cart early"
    );
    assert_eq!(x_now.version, x.version);
    child.kill().await.ok();
}
