//! Watchers on two replicas while writers run through both, an unrelated
//! transaction stays open the whole time, and one replica is killed with
//! SIGKILL and started again: every acknowledged change reaches every
//! watcher exactly once (watchers resume with their last sequence).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cart_service::proto::{
    AddItemsRequest, CartEventType, CreateCartRequest, WatchCartsRequest,
    cart_service_client::CartServiceClient,
};
use tonic::transport::Channel;

use crate::{free_port, fresh_database, line, sql, start_server};

/// What one watcher saw: every (cart, version) with how often.
type Seen = Arc<Mutex<HashMap<(String, i64), usize>>>;

/// A watcher that follows `port`'s WatchCarts and, whenever its stream
/// breaks, resumes there from the last sequence it saw (an event or a
/// progress marker). Ready once its first marker came.
fn watcher(port: u16, seen: Seen, ready: Arc<AtomicUsize>, stop: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        let mut after = 0;
        let mut counted = false;
        while stop.load(Ordering::Relaxed) == 0 {
            let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let req = WatchCartsRequest {
                after_sequence: after,
                progress_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                ..Default::default()
            };
            let Ok(stream) = CartServiceClient::new(ch).watch_carts(req).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(ev)) = stream.message().await {
                if ev.sequence < after {
                    panic!("a sequence went back: {} after {after}", ev.sequence);
                }
                after = ev.sequence;
                if ev.r#type == CartEventType::Progress as i32 {
                    if !counted {
                        counted = true;
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                *seen
                    .lock()
                    .unwrap()
                    .entry((ev.cart_id.clone(), ev.version))
                    .or_default() += 1;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_get_every_change_once_through_a_long_transaction_and_a_kill_9() {
    const WATCHERS_PER_REPLICA: usize = 4;
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    let db = fresh_database().await;
    let (port_a, port_b) = (free_port(), free_port());
    let (mut a, client_a) = start_server(&db, port_a).await;
    let (_b, client_b) = start_server(&db, port_b).await;

    // A session of someone else's, writing a table of its own, open for the
    // whole scenario.
    let mut batch = sql(&db).await;
    batch
        .batch_execute("CREATE TABLE batch_job (n int)")
        .await
        .unwrap();
    let job = batch.transaction().await.unwrap();
    job.execute("INSERT INTO batch_job VALUES (1)", &[])
        .await
        .unwrap();

    let mut carts = Vec::new();
    for _ in 0..WRITERS {
        let mut c = client_b.clone();
        let cart = c.create_cart(CreateCartRequest::default()).await.unwrap();
        carts.push(cart.into_inner().id);
    }

    let (ready, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut views = Vec::new();
    for port in [port_a, port_b] {
        for _ in 0..WATCHERS_PER_REPLICA {
            let seen = Seen::default();
            watcher(port, seen.clone(), ready.clone(), stop.clone());
            views.push((port, seen));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < views.len() {
        assert!(Instant::now() < deadline, "watchers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Writers alternate between the replicas; a failed call (the killed
    // replica) is not acknowledged and not retried.
    let acked: Arc<Mutex<HashSet<(String, i64)>>> = Default::default();
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = carts
        .iter()
        .enumerate()
        .map(|(w, cart)| {
            let clients = [client_a.clone(), client_b.clone()];
            let (cart, acked, done) = (cart.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let mut c = clients[i % 2].clone();
                    let req = AddItemsRequest {
                        cart_id: cart.clone(),
                        items: vec![line(format!("w{w}s{}", i % 50))],
                        ..Default::default()
                    };
                    if let Ok(r) = c.add_items(req).await {
                        acked
                            .lock()
                            .unwrap()
                            .insert((cart.clone(), r.into_inner().version));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Replica A dies (SIGKILL) a third of the way, and comes back.
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < WRITERS * PER_WRITER / 3 {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.start_kill().expect("kill -9");
    let _ = a.wait().await;
    let (a_again, _) = start_server(&db, port_a).await;
    for w in writers {
        w.await.unwrap();
    }

    // Every acknowledged change reaches every watcher, none twice.
    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (port, seen) in &views {
        loop {
            let missing = {
                let seen = seen.lock().unwrap();
                acked.iter().filter(|k| !seen.contains_key(*k)).count()
            };
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a watcher on port {port} misses {missing} acknowledged changes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let twice: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        assert!(twice.is_empty(), "seen more than once: {twice:?}");
    }
    stop.store(1, Ordering::Relaxed);
    println!(
        "watchers: {} acknowledged changes reached all {} watchers on two replicas exactly once, \
         through a kill -9 of one replica and an unrelated transaction open throughout",
        acked.len(),
        views.len()
    );
    job.rollback().await.unwrap();
    drop(a_again);
}
