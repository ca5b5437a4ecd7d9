//! kill -9 of a replica while it is delivering callbacks: another replica
//! delivers every one of them (after the dead one's leases end); only
//! those in flight at the kill may arrive twice (at least once).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cart_service::proto::{Actor, CancelCartRequest, CreateCartRequest};

use super::{free_port, fresh_database, sql, start_server_with};
use crate::receiver::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_delivery_loses_no_callback() {
    const N: usize = 600;
    let db = fresh_database().await;
    let port = free_port();
    let rx = Receiver::start(&[]).await;
    // Slow answers, so that many POSTs are under way at the kill.
    rx.set_delay(Duration::from_secs(1));
    let env = [
        ("CART_CALLBACK_TIMEOUT", "5s"),
        ("CART_CALLBACK_BACKOFF", "1s,1s,1s,1s,1s"),
    ];
    let (mut server, mut client) = start_server_with(&db, port, &env).await;
    for i in 0..N {
        let cart = client
            .create_cart(CreateCartRequest {
                callback_cancel_url: rx.url(&format!("/cancel/{i}")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        client
            .cancel_cart(CancelCartRequest {
                cart_id: cart.id,
                actor: Actor::Customer as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Mid-delivery: some arrived, more are under way, the rest wait.
    let start = Instant::now();
    while rx.received().len() < N / 4 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deliveries never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.start_kill().expect("kill -9");
    let _ = server.wait().await;
    let at_kill = rx.received().len();
    assert!(at_kill < N, "killed before every callback was POSTed");

    let (server, _client) = start_server_with(&db, port, &env).await;
    let c = sql(&db).await;
    let start = Instant::now();
    loop {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM callback_deliveries",
                &[],
            )
            .await
            .unwrap();
        let (delivered, all): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(all as usize, N, "one outbox row per cancellation");
        if delivered as usize == N {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{delivered} of {N} delivered after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in rx.received() {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    let twice = per_id.values().filter(|n| **n > 1).count();
    println!(
        "kill -9 mid-delivery: {at_kill} of {N} callbacks had arrived at the kill; after it, \
         all {} webhook-ids arrived ({twice} more than once: those in flight at the kill), \
         every outbox row delivered in {:.1} s",
        per_id.len(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(per_id.len(), N, "no callback lost");
    assert!(
        twice <= 64,
        "only the endpoint's in-flight share repeats: {twice}"
    );
    drop(server);
}
