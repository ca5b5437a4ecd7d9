//! The watch scenarios: commit-to-receipt latency and many open streams.

use super::*;

pub(crate) fn timestamp_to_system(t: &prost_types::Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
}

/// Streams opened at once: at most this many between request and first
/// event (the snapshot), as clients arriving over time would be. All at
/// once, each open waits for a pooled connection to read its cart, and
/// those waiting past the server's pool timeout fail UNAVAILABLE.
const OPENING: usize = 256;

/// N watchers on seeded carts (on `--watch-addr` when given) while AddItems
/// runs at `--rate`; latency = receipt time - event occurred_at.
pub(crate) async fn watch_latency(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let watch_addr = args.watch_addr.clone().unwrap_or(args.addr.clone());
    let watch_channels = connect(&watch_addr, args.watch_connections).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Instant::now() + args.warmup;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stats>();
    let opened = Arc::new(AtomicU64::new(0));
    // Every change received (snapshots apart), for CPU per delivered event.
    let received = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    for w in 0..args.watchers {
        let mut c = CartServiceClient::new(watch_channels[w % watch_channels.len()].clone());
        let req = ctx.req(proto::WatchCartRequest {
            cart_id: ctx.carts[w % ctx.carts.len()].clone(),
            after_version: 0,
        });
        let (stop, tx, opened) = (stop.clone(), tx.clone(), opened.clone());
        let (received, gate) = (received.clone(), gate.clone());
        tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut opening = Some(gate.acquire_owned().await);
            match c.watch_cart(req).await {
                Ok(resp) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let mut stream = resp.into_inner();
                    let mut first = true;
                    loop {
                        let msg = tokio::select! {
                            m = stream.message() => m,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {
                                if stop.load(Ordering::Relaxed) { break } else { continue }
                            }
                        };
                        match msg {
                            Ok(Some(ev)) => {
                                if std::mem::take(&mut first) {
                                    drop(opening.take());
                                    continue; // the snapshot, not a change
                                }
                                received.fetch_add(1, Ordering::Relaxed);
                                if Instant::now() < measure_from {
                                    continue;
                                }
                                if let Some(t) = &ev.occurred_at {
                                    let lat = SystemTime::now()
                                        .duration_since(timestamp_to_system(t))
                                        .unwrap_or_default();
                                    stats.record("watch-event", lat);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                stats.error("watch", e.code());
                                break;
                            }
                        }
                    }
                }
                Err(e) => stats.error("watch-open", e.code()),
            }
            let _ = tx.send(stats);
        });
    }
    drop(tx);
    // Let the streams open before the writers start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (opened.load(Ordering::Relaxed) as usize) < args.watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = opened.load(Ordering::Relaxed);
    // cpu_ticks(None) would read this process: only with a pid.
    let watch_cpu = || args.watch_server_pid.and_then(|p| cpu_ticks(Some(p)));
    let cpu_start = (watch_cpu(), received.load(Ordering::Relaxed));
    let (writes, secs) = drive(
        ctx.clone(),
        Scenario::AddItems,
        args.concurrency,
        args.rate,
        args.warmup,
        args.duration,
        None,
    )
    .await?;
    // Give in-flight events a moment, then stop the watchers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = received.load(Ordering::Relaxed) - cpu_start.1;
    // Clock ticks are 10 ms: over a run of seconds, a few per mille.
    let cpu_per_event_us = match (cpu_start.0, watch_cpu()) {
        (Some(a), Some(b)) if events > 0 => Some((b - a) as f64 * 10_000.0 / events as f64),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    let mut watch = Stats::default();
    while let Some(s) = rx.recv().await {
        watch.merge(s);
    }
    let secs = secs.as_secs_f64();
    let mut all = writes;
    all.merge(watch);
    print_table(
        &format!(
            "watch-latency: {open} watchers on {watch_addr}, writes at {:?}/s",
            args.rate
        ),
        &all,
        secs,
    );
    if let Some(us) = cpu_per_event_us {
        println!("  watch server CPU {us:.1} us per delivered event ({events} events)");
    }
    Ok(serde_json::json!({
        "watchers_open": open,
        "watch_addr": watch_addr,
        "events_delivered": events,
        "watch_server_cpu_us_per_event": cpu_per_event_us,
        "result": stats_json(&all, secs),
    }))
}

/// Holds N WatchCart streams; GetCart latency idle vs with the streams open; server RSS.
pub(crate) async fn watchers(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let rss_before = rss_kib(args.server_pid);
    let (idle, secs) = drive(
        ctx.clone(),
        Scenario::GetCart,
        args.concurrency,
        args.rate,
        args.warmup,
        args.duration,
        None,
    )
    .await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let watch_channels = connect(&args.addr, args.watch_connections).await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let codes = Arc::new(std::sync::Mutex::new(Stats::default()));
    let opening_started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..args.watchers {
        let mut c = CartServiceClient::new(watch_channels[w % watch_channels.len()].clone());
        let req = ctx.req(proto::WatchCartRequest {
            cart_id: ctx.carts[w % ctx.carts.len()].clone(),
            after_version: 0,
        });
        let (stop, opened, failed) = (stop.clone(), opened.clone(), failed.clone());
        let (gate, codes) = (gate.clone(), codes.clone());
        handles.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let first = match c.watch_cart(req).await {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    match stream.message().await {
                        Ok(Some(_)) => Ok(stream),
                        Ok(None) => Err(Code::Ok),
                        Err(e) => Err(e.code()),
                    }
                }
                Err(e) => Err(e.code()),
            };
            drop(permit);
            match first {
                Ok(mut stream) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    // One wake-up at the end, not a timer per stream (100,000
                    // streams polling every 500 ms kept this process busy).
                    let mut stop = stop;
                    loop {
                        tokio::select! {
                            m = stream.message() => if !matches!(m, Ok(Some(_))) { break },
                            _ = stop.wait_for(|s| *s) => break,
                        }
                    }
                }
                Err(code) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    codes.lock().unwrap().error("watch-open", code);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ((opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)) as usize)
        < args.watchers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = opening_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = rss_kib(args.server_pid);
    let (loaded, _) = drive(
        ctx.clone(),
        Scenario::GetCart,
        args.concurrency,
        args.rate,
        args.warmup,
        args.duration,
        None,
    )
    .await?;
    let rss_loaded = rss_kib(args.server_pid);
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let secs = secs.as_secs_f64();
    print_table("get-cart idle (no watchers)", &idle, secs);
    for (k, v) in &codes.lock().unwrap().errors {
        println!("  error {k}: {v}");
    }
    print_table(
        &format!(
            "get-cart with {} open watchers ({} failed, opened in {open_secs:.1}s)",
            opened.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        ),
        &loaded,
        secs,
    );
    let p99 = |s: &Stats| s.ops.get("get-cart").map(|h| ms(h.value_at_quantile(0.99)));
    println!(
        "server RSS KiB: before {:?}, {} streams open {:?}, after load {:?}; get-cart p99 ratio loaded/idle {:.2}",
        rss_before,
        opened.load(Ordering::Relaxed),
        rss_open,
        rss_loaded,
        p99(&loaded).unwrap_or(f64::NAN) / p99(&idle).unwrap_or(f64::NAN)
    );
    Ok(serde_json::json!({
        "watchers_open": opened.load(Ordering::Relaxed),
        "watchers_failed": failed.load(Ordering::Relaxed),
        "rss_kib_before": rss_before,
        "rss_kib_open": rss_open,
        "rss_kib_after_load": rss_loaded,
        "idle": stats_json(&idle, secs),
        "loaded": stats_json(&loaded, secs),
    }))
}
