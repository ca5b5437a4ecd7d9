//! The churn scenario: WatchCart streams opened, read to their first event
//! and closed by the client, `--cycles` times, like subscribers that
//! reconnect. The server must free each watcher when its client leaves:
//! its RSS stays flat and its open-streams gauge drops to 0 at the end.

use super::*;

/// Target: RSS at the end within this of its value after the first 10,000.
const RSS_BUDGET_KIB: i64 = 20 * 1024;
/// Target: the gauge reads 0 within this of the last close.
const DRAIN_BUDGET: Duration = Duration::from_secs(1);
/// The reference point for RSS, and the step of the RSS trail.
const STEP: u64 = 10_000;

pub(crate) async fn churn(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let metrics_addr = args
        .metrics_addr
        .clone()
        .context("churn needs --metrics-addr (the server's CART_METRICS_ADDR)")?;
    let cycles = args.cycles;
    let in_flight = args.in_flight.max(1);
    let channels = connect(&args.addr, args.watch_connections).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let (ctx, next, done) = (ctx.clone(), next.clone(), done.clone());
        let mut c = CartServiceClient::new(channels[w % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= cycles {
                    break;
                }
                let t = Instant::now();
                let req = ctx.req(proto::WatchCartRequest {
                    cart_id: ctx.carts[n as usize % ctx.carts.len()].clone(),
                    after_version: 0,
                });
                match c.watch_cart(req).await {
                    Ok(resp) => {
                        let mut stream = resp.into_inner();
                        match stream.message().await {
                            Ok(Some(_)) => stats.record("open-first-event", t.elapsed()),
                            Ok(None) => stats.error("watch-first", Code::Ok),
                            Err(e) => stats.error("watch-first", e.code()),
                        }
                        // Dropping the stream is the client leaving (RST_STREAM).
                    }
                    Err(e) => stats.error("watch-open", e.code()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            stats
        }));
    }
    // The RSS trail: one reading per STEP cycles; the first is the reference.
    let mut trail: Vec<(u64, Option<u64>)> = Vec::new();
    let mut mark = STEP;
    while mark <= cycles {
        while done.load(Ordering::Relaxed) < mark && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        trail.push((mark, rss_kib(args.server_pid)));
        eprintln!(
            "churn: {mark} cycles, server RSS {:?} KiB",
            trail.last().and_then(|t| t.1)
        );
        mark += STEP;
    }
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(t.await?);
    }
    let last_close = Instant::now();
    let secs = started.elapsed().as_secs_f64();
    let drained =
        probe::streams_drained(&metrics_addr, last_close, Duration::from_secs(30)).await?;
    let rss_end = rss_kib(args.server_pid);
    let text = probe::scrape(&metrics_addr).await?;
    let watched = probe::metric(&text, "cart_watched_carts");
    let tasks_alive = probe::metric(&text, "cart_runtime_tasks_alive");

    let rss_ref = trail.first().and_then(|t| t.1);
    let rss_growth = rss_ref.zip(rss_end).map(|(a, b)| b as i64 - a as i64);
    let rss_ok = rss_growth.map(|g| g <= RSS_BUDGET_KIB);
    let drain_ok = drained.is_some_and(|d| d <= DRAIN_BUDGET);
    let errors: u64 = stats.errors.values().sum();
    let pass = rss_ok.unwrap_or(false) && drain_ok && errors == 0;

    print_table(
        &format!(
            "churn: {cycles} WatchCart open/first-event/close cycles over {} carts, {in_flight} at once, {secs:.1}s (load {})",
            ctx.carts.len(),
            loadavg()
        ),
        &stats,
        secs,
    );
    println!(
        "  server RSS KiB after {STEP}: {rss_ref:?}; at the end: {rss_end:?}; growth {rss_growth:?} KiB (target <= {RSS_BUDGET_KIB}): {}",
        verdict(rss_ok.unwrap_or(false))
    );
    println!(
        "  cart_watch_streams_open = 0 {} after the last close (target <= {} ms): {}",
        drained.map_or("not within 30s".to_string(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1000.0
        )),
        DRAIN_BUDGET.as_millis(),
        verdict(drain_ok)
    );
    println!(
        "  then cart_watched_carts {watched:?}, cart_runtime_tasks_alive {tasks_alive:?}; errors {errors}"
    );
    println!("  churn: {}", verdict(pass));
    Ok(serde_json::json!({
        "cycles": cycles,
        "in_flight": in_flight,
        "seconds": secs,
        "rss_kib_trail": trail.iter().map(|(n, r)| serde_json::json!([n, r])).collect::<Vec<_>>(),
        "rss_kib_ref": rss_ref,
        "rss_kib_end": rss_end,
        "rss_growth_kib": rss_growth,
        "rss_ok": rss_ok,
        "drain_ms": drained.map(|d| d.as_secs_f64() * 1000.0),
        "drain_ok": drain_ok,
        "watched_carts_end": watched,
        "tasks_alive_end": tasks_alive,
        "stats": stats_json(&stats, secs),
        "pass": pass,
    }))
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
