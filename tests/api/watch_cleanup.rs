//! Watchers whose clients leave are freed at once: the open-streams gauge
//! and the per-cart routing entries go back to their baseline without any
//! further event on the watched carts.

use std::time::{Duration, Instant};

use cart_service::proto::{WatchCartRequest, WatchCartsRequest};

use crate::{
    both_stores,
    helpers::{Backend, create_cart, http_get, item, next, spawn_app},
};

/// Streams opened at once; each is closed by the client before the next round.
const ROUND: usize = 100;
/// Rounds of WatchCart streams (each read its first event, then closed).
const CART_ROUNDS: usize = 20;
/// Rounds of WatchCarts streams (closed while waiting for an event).
const TENANT_ROUNDS: usize = 10;
/// How long the server may take to notice; generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

async fn watchers_that_leave_are_freed_at_once(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut carts = Vec::new();
    for _ in 0..10 {
        carts.push(create_cart(&mut c, vec![item("TEA", 1, "1.00")]).await.id);
    }

    for round in 0..CART_ROUNDS {
        let mut open = Vec::with_capacity(ROUND);
        for i in 0..ROUND {
            let mut c = c.clone();
            let id = carts[(round + i) % carts.len()].clone();
            open.push(tokio::spawn(async move {
                let mut s = c
                    .watch_cart(WatchCartRequest {
                        cart_id: id,
                        after_version: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                next(&mut s).await; // the cart as it stands; then the client leaves
            }));
        }
        for t in open {
            t.await.unwrap();
        }
    }
    for _ in 0..TENANT_ROUNDS {
        let mut streams = Vec::with_capacity(ROUND);
        for _ in 0..ROUND {
            streams.push(
                c.watch_carts(WatchCartsRequest::default())
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        drop(streams);
    }

    // No event follows on any cart: only the clients' leaving can end them.
    let started = Instant::now();
    let (open, watched) = loop {
        let (_, text) = http_get(app.metrics_addr, "/metrics").await;
        let open = gauge(&text, "cart_watch_streams_open");
        let watched = gauge(&text, "cart_watched_carts");
        if (open, watched) == (0.0, 0.0) || started.elapsed() > PATIENCE {
            break (open, watched);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(open, 0.0, "streams still counted open");
    assert_eq!(watched, 0.0, "routing entries still held");
    assert_eq!(app.store.feed().watched_carts(), 0);
    println!(
        "{} streams closed; gauge at 0 after {:?}",
        (CART_ROUNDS + TENANT_ROUNDS) * ROUND,
        started.elapsed()
    );
}

both_stores!(watchers_that_leave_are_freed_at_once);
