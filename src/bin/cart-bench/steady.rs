//! The steady scenario (bench/storage.sh, step `steady`): AddItems paced at
//! `--rate` on the seeded carts, and checkout lifecycles at
//! `--lifecycle-rate` whose carts all end final (confirmed, cancelled, or
//! left awaiting the customer until CART_CHECKOUT_TIMEOUT expires them),
//! with request ids and callbacks to a local receiver, for `--duration`.
//! Every `--sample-every` it prints the window's add-items rate and
//! latency; the result is add-items latency over the run after
//! `--warmup`. Row counts are the script's part (it reads Postgres).

use std::sync::Mutex;

use super::*;
use crate::soak_load::{Shared, lifecycles, receiver, writers};

/// Takes the window's latencies out of `h`, leaving it empty.
fn take(h: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    std::mem::replace(&mut *h.lock().unwrap(), histogram())
}

pub(crate) async fn steady(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let rate = args
        .rate
        .context("steady needs --rate (add-items per second)")?;
    let shared = Arc::new(Shared::new());
    let callback = receiver(shared.clone()).await?;
    // Lifecycles always carry request ids (their keys go with their carts);
    // the writers' AddItems carry them only with --request-ids (a key of an
    // ACTIVE cart is kept for the contract's 24 hours).
    let keyed = Arc::new(Ctx {
        args: Args {
            request_ids: true,
            ..args.clone()
        },
        channels: ctx.channels.clone(),
        auth: ctx.auth.clone(),
        carts: ctx.carts.clone(),
        request_seq: AtomicU64::new(0),
        run_id: ctx.run_id ^ 0x11fe,
    });
    println!(
        "steady: {:?}, add-items {rate:.0}/s on {} carts ({} workers), {}/s lifecycles; measured after {:?}",
        args.duration,
        ctx.carts.len(),
        args.concurrency,
        args.lifecycle_rate,
        args.warmup
    );
    let started = Instant::now();
    writers(&ctx, &shared, args.concurrency, rate);
    lifecycles(&keyed, &shared, args.lifecycle_rate, callback, false);

    let mut total = histogram();
    let mut samples = Vec::new();
    let every = args.sample_every;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (mut writes0, mut cycles0, mut posts0, mut errors0) = (0, 0, 0, 0);
    let mut measured = 0.0;
    let mut tick = Instant::now();
    println!("  t s   add/s  add p50  add p99  lifecycles/s  callbacks/s  errors");
    while started.elapsed() < args.duration {
        tick += every;
        tokio::time::sleep_until(tick.into()).await;
        let t = started.elapsed().as_secs_f64();
        let window = take(&shared.write_window);
        let secs = every.as_secs_f64();
        let (writes, cycles, posts, errors) = (
            get(&shared.writes),
            get(&shared.lifecycles),
            get(&shared.callback_posts),
            get(&shared.errors_n),
        );
        let s = serde_json::json!({
            "t_s": t,
            "add_per_s": (writes - writes0) as f64 / secs,
            "add_p50_ms": ms(window.value_at_quantile(0.5)),
            "add_p99_ms": ms(window.value_at_quantile(0.99)),
            "lifecycles_per_s": (cycles - cycles0) as f64 / secs,
            "callbacks_per_s": (posts - posts0) as f64 / secs,
            "errors": errors - errors0,
        });
        println!(
            "  {:>4.0}  {:>6.0}  {:>7.2}  {:>7.2}  {:>12.1}  {:>11.1}  {:>6}",
            t,
            s["add_per_s"].as_f64().unwrap_or(0.0),
            s["add_p50_ms"].as_f64().unwrap_or(0.0),
            s["add_p99_ms"].as_f64().unwrap_or(0.0),
            s["lifecycles_per_s"].as_f64().unwrap_or(0.0),
            s["callbacks_per_s"].as_f64().unwrap_or(0.0),
            errors - errors0
        );
        (writes0, cycles0, posts0, errors0) = (writes, cycles, posts, errors);
        // Windows that begin after the warm-up count toward the run's figures.
        if t - secs >= args.warmup.as_secs_f64() - 0.5 {
            total.add(window).ok();
            measured += secs;
        }
        samples.push(s);
    }
    shared.stop_load.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let add = op_json(&total, measured.max(1.0));
    let errors = shared.errors.lock().unwrap().errors.clone();
    println!(
        "steady result: add-items {:.0}/s p50 {:.2} p99 {:.2} p99.9 {:.2} ms over the last {measured:.0} s; {} lifecycles, {} callbacks received (load {})",
        add["rate"].as_f64().unwrap_or(0.0),
        add["p50_ms"].as_f64().unwrap_or(0.0),
        add["p99_ms"].as_f64().unwrap_or(0.0),
        add["p999_ms"].as_f64().unwrap_or(0.0),
        get(&shared.lifecycles),
        get(&shared.callback_posts),
        loadavg()
    );
    for (k, v) in &errors {
        println!("  error {k}: {v}");
    }
    Ok(serde_json::json!({
        "ops": { "add-items": add },
        "samples": samples,
        "lifecycles": get(&shared.lifecycles),
        "callbacks": get(&shared.callback_posts),
        "errors": errors,
    }))
}
