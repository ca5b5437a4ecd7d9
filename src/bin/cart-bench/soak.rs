//! The soak scenario: a steady mixed load for `--duration` (writers at
//! about 30% of the measured peak, reconnecting WatchCart and resuming
//! WatchCarts watchers, checkout lifecycles with callbacks to a local
//! receiver, carts left to expire), sampled every `--sample-every`. It fails
//! when a sampled figure trends upward after `--soak-warmup`, when a
//! watcher misses or repeats an event, or when a callback is lost.

use std::{collections::HashSet, sync::Mutex};

use super::*;
use crate::{churn::verdict, probe::*, soak_load::*, soak_watch::*};

/// One sample: gauges read at its end, rates and p99s over its window.
#[derive(Clone, serde::Serialize)]
pub(crate) struct Sample {
    t_min: f64,
    rss_mib: f64,
    streams_open: f64,
    watched_carts: f64,
    tasks_alive: f64,
    pool_in_use: f64,
    pool_waiting: f64,
    writes_per_s: f64,
    write_p99_ms: f64,
    events_per_s: f64,
    watch_p99_ms: f64,
    errors: u64,
}

/// A figure that must not trend upward, and its allowed slope per minute.
struct Trend {
    name: &'static str,
    get: fn(&Sample) -> f64,
    /// Allowed rise per minute: absolute, or relative to the median.
    abs: f64,
    rel: f64,
}

const TRENDS: &[Trend] = &[
    Trend {
        name: "rss_mib",
        get: |s| s.rss_mib,
        abs: 1.0,
        rel: 0.0,
    },
    Trend {
        name: "streams_open",
        get: |s| s.streams_open,
        abs: 1.0,
        rel: 0.0,
    },
    Trend {
        name: "watched_carts",
        get: |s| s.watched_carts,
        abs: 1.0,
        rel: 0.0,
    },
    Trend {
        name: "tasks_alive",
        get: |s| s.tasks_alive,
        abs: 2.0,
        rel: 0.0,
    },
    Trend {
        name: "pool_in_use",
        get: |s| s.pool_in_use,
        abs: 0.2,
        rel: 0.0,
    },
    Trend {
        name: "write_p99_ms",
        get: |s| s.write_p99_ms,
        abs: 0.05,
        rel: 0.02,
    },
    Trend {
        name: "watch_p99_ms",
        get: |s| s.watch_p99_ms,
        abs: 0.05,
        rel: 0.02,
    },
];

/// Shortest span of samples after warm-up whose slope is judged, in minutes.
const MIN_SPAN_MIN: f64 = 5.0;

fn p99_ms(h: &Mutex<Histogram<u64>>) -> f64 {
    let h = std::mem::replace(&mut *h.lock().unwrap(), histogram());
    if h.is_empty() {
        f64::NAN
    } else {
        ms(h.value_at_quantile(0.99))
    }
}

struct Counters {
    writes: u64,
    events: u64,
    errors: u64,
}

impl Counters {
    fn read(s: &Shared) -> Counters {
        Counters {
            writes: s.writes.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            errors: s.errors_n.load(Ordering::Relaxed),
        }
    }
}

async fn sample(
    ctx: &Ctx,
    shared: &Shared,
    metrics_addr: &str,
    t_min: f64,
    secs: f64,
    before: &Counters,
) -> anyhow::Result<(Sample, Counters)> {
    let text = scrape(metrics_addr).await?;
    let m = |name| metric(&text, name).unwrap_or(f64::NAN);
    let now = Counters::read(shared);
    let s = Sample {
        t_min,
        rss_mib: rss_kib(ctx.args.server_pid).map_or(f64::NAN, |k| k as f64 / 1024.0),
        streams_open: m("cart_watch_streams_open"),
        watched_carts: m("cart_watched_carts"),
        tasks_alive: m("cart_runtime_tasks_alive"),
        pool_in_use: m("cart_db_pool_connections") - m("cart_db_pool_available_connections"),
        pool_waiting: m("cart_db_pool_waiting_calls"),
        writes_per_s: (now.writes - before.writes) as f64 / secs,
        write_p99_ms: p99_ms(&shared.write_window),
        events_per_s: (now.events - before.events) as f64 / secs,
        watch_p99_ms: p99_ms(&shared.watch_window),
        errors: now.errors - before.errors,
    };
    Ok((s, now))
}

const HEADER: &str = "  t min   RSS MiB  streams  watched  tasks  pool  wait  writes/s  write p99  events/s  watch p99  errors";

fn row(s: &Sample) -> String {
    format!(
        "  {:>5.1}  {:>8.1}  {:>7}  {:>7}  {:>5}  {:>4}  {:>4}  {:>8.0}  {:>9.2}  {:>8.0}  {:>9.2}  {:>6}",
        s.t_min,
        s.rss_mib,
        s.streams_open,
        s.watched_carts,
        s.tasks_alive,
        s.pool_in_use,
        s.pool_waiting,
        s.writes_per_s,
        s.write_p99_ms,
        s.events_per_s,
        s.watch_p99_ms,
        s.errors
    )
}

/// Theil-Sen slope per minute of each figure after warm-up, against its limit.
fn trends(samples: &[Sample], warmup_min: f64) -> (bool, Vec<serde_json::Value>) {
    let mut ok = true;
    let mut out = Vec::new();
    for t in TRENDS {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.t_min >= warmup_min)
            .map(|s| (s.t_min, (t.get)(s)))
            .filter(|p| p.1.is_finite())
            .collect();
        let med = median(pts.iter().map(|p| p.1).collect());
        let limit = t.abs.max(t.rel * med);
        // Over a few minutes a slope is warm-up and noise, not a trend.
        let span = pts.last().zip(pts.first()).map_or(0.0, |(b, a)| b.0 - a.0);
        let slope = if span >= MIN_SPAN_MIN {
            theil_sen(&pts)
        } else {
            None
        };
        let pass = slope.is_none_or(|s| s <= limit);
        ok &= pass;
        println!(
            "  trend {:<14} median {:>9.2}  slope {:>9} /min  limit {:>7.3} /min  {}",
            t.name,
            med,
            slope.map_or("n/a".into(), |s| format!("{s:+.3}")),
            limit,
            slope.map_or("NOT JUDGED (under 5 min after warm-up)", |_| verdict(pass))
        );
        out.push(
            serde_json::json!({"figure": t.name, "median": med, "slope_per_min": slope,
            "limit_per_min": limit, "pass": pass}),
        );
    }
    (ok, out)
}

/// The lifecycle carts whose callback the server owes: CONFIRMED or
/// CANCELLED, or EXPIRED after being submitted (awaiting the customer).
async fn owed_callbacks(ctx: &Ctx, shared: &Shared) -> anyhow::Result<HashSet<String>> {
    let checkouts = shared.checkouts.lock().unwrap().clone();
    let mut c = ctx.client(0);
    let mut owed = HashSet::new();
    for ch in checkouts {
        let cart = c
            .get_cart(ctx.req(proto::GetCartRequest {
                cart_id: ch.id.clone(),
            }))
            .await?
            .into_inner();
        use proto::CartStatus as S;
        let s = cart.status;
        if s == S::Confirmed as i32
            || s == S::Cancelled as i32
            || (s == S::Expired as i32 && ch.submitted)
        {
            owed.insert(ch.id);
        }
    }
    Ok(owed)
}

pub(crate) async fn soak(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let metrics_addr = args
        .metrics_addr
        .clone()
        .context("soak needs --metrics-addr (the server's CART_METRICS_ADDR)")?;
    let (rate, peak) = match args.rate {
        Some(r) => (r, None),
        None => {
            let (stats, d) = drive(
                ctx.clone(),
                Scenario::AddItems,
                args.concurrency,
                None,
                Duration::from_secs(2),
                Duration::from_secs(10),
                None,
            )
            .await?;
            let peak = stats.ops.values().map(|h| h.len()).sum::<u64>() as f64 / d.as_secs_f64();
            (peak * 0.3, Some(peak))
        }
    };
    println!(
        "soak: {:?}, writers {rate:.0}/s (peak {peak:?}), {} WatchCart + {} WatchCarts watchers, {}/s lifecycles, {} carts",
        args.duration,
        args.cart_watchers,
        args.tenant_watchers,
        args.lifecycle_rate,
        ctx.carts.len()
    );
    let shared = Arc::new(Shared::new());
    let tally = Arc::new(Tally::default());
    let callback = receiver(shared.clone()).await?;
    let channels = connect(&args.addr, args.watch_connections).await?;
    let started = Instant::now();
    let mut watchers = tenant_watchers(
        &ctx,
        &shared,
        &tally,
        &channels,
        args.tenant_watchers,
        started,
    );
    // Every write of the run must come after the WatchCarts watchers' start.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (tally.tenant_ready.load(Ordering::Relaxed) as usize) < args.tenant_watchers {
        if Instant::now() > deadline {
            bail!("the WatchCarts watchers did not open within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watchers.extend(cart_watchers(
        &ctx,
        &shared,
        &tally,
        &channels,
        args.cart_watchers,
        started,
    ));
    writers(&ctx, &shared, args.concurrency, rate);
    lifecycles(&ctx, &shared, args.lifecycle_rate, callback, true);

    let mut samples = Vec::new();
    let mut before = Counters::read(&shared);
    let every = args.sample_every;
    let mut tick = Instant::now();
    println!("{HEADER}");
    while started.elapsed() < args.duration {
        tick += every;
        tokio::time::sleep_until(tick.into()).await;
        let t_min = started.elapsed().as_secs_f64() / 60.0;
        let (s, now) = sample(
            &ctx,
            &shared,
            &metrics_addr,
            t_min,
            every.as_secs_f64(),
            &before,
        )
        .await?;
        before = now;
        println!("{}", row(&s));
        println!("SAMPLE {}", serde_json::to_string(&s)?);
        samples.push(s);
    }

    // The end: writes stop, watchers catch up with what was acknowledged and leave.
    shared.stop_load.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    shared.stop_watch.store(true, Ordering::Relaxed);
    for w in watchers {
        w.await?;
    }
    let last_close = Instant::now();
    let drained = streams_drained(&metrics_addr, last_close, Duration::from_secs(30)).await?;

    // Callbacks: every one owed arrives (the backlog may take a while).
    let owed = owed_callbacks(&ctx, &shared).await?;
    let cb_deadline = Instant::now() + Duration::from_secs(180);
    let lost = loop {
        let lost = {
            let got = shared.callbacks.lock().unwrap();
            owed.iter().filter(|id| !got.contains_key(*id)).count()
        };
        if lost == 0 || Instant::now() > cb_deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (cb_carts, cb_ids, cb_unique) = {
        let got = shared.callbacks.lock().unwrap();
        let ids: Vec<&String> = got.values().flatten().collect();
        let unique: HashSet<&&String> = ids.iter().collect();
        (got.len(), ids.len(), unique.len())
    };

    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let missed = get(&tally.cart_missed) + get(&tally.tenant_missed);
    let repeated = get(&tally.cart_repeated) + get(&tally.tenant_repeated);
    let behind = get(&tally.cart_behind);
    println!(
        "\nsoak result (machine shared with other builders; load {})",
        loadavg()
    );
    let warmup_min = args.soak_warmup.as_secs_f64() / 60.0;
    let (trends_ok, trend_json) = trends(&samples, warmup_min);
    let watch_ok = missed == 0 && repeated == 0 && behind == 0;
    println!(
        "  WatchCart: {} streams, missed {}, repeated {}, behind at the end {}; WatchCarts: {} streams, missed {}, repeated {}: {}",
        get(&tally.cart_streams),
        get(&tally.cart_missed),
        get(&tally.cart_repeated),
        behind,
        get(&tally.tenant_streams),
        get(&tally.tenant_missed),
        get(&tally.tenant_repeated),
        verdict(watch_ok)
    );
    println!(
        "  callbacks: {} owed, {lost} lost; {cb_ids} POSTs received for {cb_carts} carts, {} repeats of a webhook-id: {}",
        owed.len(),
        cb_ids - cb_unique,
        verdict(lost == 0)
    );
    println!(
        "  writes {}, lifecycles {}, events received {}; open-streams gauge 0 {} after the last watcher left",
        get(&shared.writes),
        get(&shared.lifecycles),
        get(&shared.events),
        drained.map_or("not within 30 s".into(), |d| format!(
            "{:.0} ms",
            d.as_secs_f64() * 1000.0
        ))
    );
    let errors = shared.errors.lock().unwrap().errors.clone();
    for (k, v) in &errors {
        println!("  error {k}: {v}");
    }
    let pass = trends_ok && watch_ok && lost == 0 && drained.is_some();
    println!("  soak: {}", verdict(pass));
    Ok(serde_json::json!({
        "rate": rate, "peak": peak, "samples": samples, "trends": trend_json,
        "watch_cart": {"streams": get(&tally.cart_streams), "missed": get(&tally.cart_missed),
            "repeated": get(&tally.cart_repeated), "behind": behind},
        "watch_carts": {"streams": get(&tally.tenant_streams), "missed": get(&tally.tenant_missed),
            "repeated": get(&tally.tenant_repeated)},
        "callbacks": {"owed": owed.len(), "lost": lost, "posts": cb_ids, "repeats": cb_ids - cb_unique},
        "writes": get(&shared.writes), "lifecycles": get(&shared.lifecycles),
        "events": get(&shared.events), "errors": errors,
        "drain_ms": drained.map(|d| d.as_secs_f64() * 1000.0),
        "pass": pass,
    }))
}
