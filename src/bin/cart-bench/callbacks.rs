//! Callback scenarios: carts confirmed through the service call a local
//! receiver back; measured are the confirmation rate, the delivered rate
//! and the confirm-to-callback latency (from the ConfirmCart request to the
//! callback's arrival, so it includes the confirmation's own latency).
//!
//! - `callbacks`: a receiver answering after `--receiver-delay`.
//! - `callback-isolation`: tenant A's receiver hangs on `--hanging`
//!   callbacks; tenant B (`--api-key-b`) confirms `--callbacks` carts at
//!   `--rate`; B's latency.
//! - `callback-outage`: the receiver answers 503 for `--outage` while carts
//!   are confirmed, then 200: counts per webhook-id and the drain rate.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use cart_service::proto;
use tonic::{Request, metadata::MetadataValue};

use crate::{
    Ctx,
    receiver::Receiver,
    stats::{histogram, ms},
};

type Auth = Option<MetadataValue<tonic::metadata::Ascii>>;

fn req<T>(auth: &Auth, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(a) = auth {
        r.metadata_mut().insert("authorization", a.clone());
    }
    r
}

/// Creates `n` submitted carts whose confirmation calls `url`.
async fn prepare(ctx: &Arc<Ctx>, auth: &Auth, n: usize, url: &str) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..ctx.args.concurrency.min(n.max(1)) {
        let (ctx, auth, next, url) = (ctx.clone(), auth.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let cart = c
                    .create_cart(req(
                        &auth,
                        proto::CreateCartRequest {
                            currency: "USD".into(),
                            callback_url: url.clone(),
                            items: vec![proto::ItemInput {
                                sku: "CB".into(),
                                name: "Callback bench".into(),
                                quantity: 1,
                                unit_price: "1.00".into(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    ))
                    .await?
                    .into_inner();
                c.submit_cart(req(
                    &auth,
                    proto::SubmitCartRequest {
                        cart_id: cart.id.clone(),
                        ..Default::default()
                    },
                ))
                .await?;
                ids.push(cart.id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

/// Confirms `carts` (at `rate` per second when given); answers when each
/// confirmation was sent, and when the last one was answered.
async fn confirm_all(
    ctx: &Arc<Ctx>,
    auth: &Auth,
    carts: Vec<String>,
    rate: Option<f64>,
) -> anyhow::Result<(HashMap<String, Instant>, Instant)> {
    let carts = Arc::new(carts);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..ctx.args.concurrency.min(carts.len().max(1)) {
        let (ctx, auth, next, carts) = (ctx.clone(), auth.clone(), next.clone(), carts.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut sent = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(cart) = carts.get(k) else { break };
                if let Some(r) = rate {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(k as f64 / r)).into(),
                    )
                    .await;
                }
                let at = Instant::now();
                c.confirm_cart(req(
                    &auth,
                    proto::ConfirmCartRequest {
                        cart_id: cart.clone(),
                        actor: proto::Actor::Customer as i32,
                        ..Default::default()
                    },
                ))
                .await?;
                sent.push((cart.clone(), at));
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = HashMap::new();
    for t in tasks {
        sent.extend(t.await??);
    }
    Ok((sent, Instant::now()))
}

/// Waits until every cart in `sent` got a 200 from `rx` (or `within` passed).
async fn await_delivered(rx: &Receiver, sent: &HashMap<String, Instant>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok: HashSet<String> = rx
            .hits()
            .into_iter()
            .filter(|h| h.status == 200 && sent.contains_key(&h.cart))
            .map(|h| h.cart)
            .collect();
        if ok.len() >= sent.len() || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Latency of each cart's first 200, and the arrival of the last one.
fn latencies(rx: &Receiver, sent: &HashMap<String, Instant>) -> serde_json::Value {
    let mut first: HashMap<String, Instant> = HashMap::new();
    for h in rx.hits().into_iter().filter(|h| h.status == 200) {
        first.entry(h.cart).or_insert(h.at);
    }
    let mut hist = histogram();
    let mut last = None::<Instant>;
    for (cart, at) in &first {
        if let Some(s) = sent.get(cart) {
            let _ = hist.record(at.saturating_duration_since(*s).as_micros() as u64);
            last = Some(last.map_or(*at, |l: Instant| l.max(*at)));
        }
    }
    serde_json::json!({
        "delivered": hist.len(),
        "expected": sent.len(),
        "p50_ms": ms(hist.value_at_quantile(0.50)),
        "p99_ms": ms(hist.value_at_quantile(0.99)),
        "max_ms": ms(hist.max()),
        "last_arrival_s": last.map(|l| l.duration_since(*sent.values().min().unwrap()).as_secs_f64()),
    })
}

pub(crate) async fn callbacks(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let a = &ctx.args;
    let rx = Receiver::start(a.receiver_delay, 200).await?;
    let carts = prepare(&ctx, &ctx.auth, a.callbacks, &rx.url).await?;
    let (sent, confirmed) = confirm_all(&ctx, &ctx.auth, carts, a.rate).await?;
    let start = *sent.values().min().context("no carts")?;
    await_delivered(&rx, &sent, Duration::from_secs(120) + a.duration).await;
    let lat = latencies(&rx, &sent);
    let confirm_s = confirmed.duration_since(start).as_secs_f64();
    let deliver_s = lat["last_arrival_s"].as_f64().unwrap_or(f64::NAN);
    let n = sent.len() as f64;
    let out = serde_json::json!({
        "receiver_delay_ms": a.receiver_delay.as_millis() as u64,
        "confirmations_per_s": n / confirm_s,
        "callbacks_per_s": n / deliver_s,
        "ratio": (n / deliver_s) / (n / confirm_s),
        "latency": lat,
        "posts": rx.hits().len(),
    });
    println!(
        "callbacks: {} confirmed in {confirm_s:.2} s ({:.0}/s); delivered by {deliver_s:.2} s ({:.0}/s, ratio {:.2}); confirm-to-callback p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {} POSTs",
        n,
        out["confirmations_per_s"].as_f64().unwrap_or(0.0),
        out["callbacks_per_s"].as_f64().unwrap_or(0.0),
        out["ratio"].as_f64().unwrap_or(0.0),
        lat["p50_ms"].as_f64().unwrap_or(0.0),
        lat["p99_ms"].as_f64().unwrap_or(0.0),
        lat["max_ms"].as_f64().unwrap_or(0.0),
        out["posts"],
    );
    Ok(out)
}

pub(crate) async fn isolation(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let a = &ctx.args;
    let auth_b: Auth = match &a.api_key_b {
        Some(k) => Some(format!("Bearer {k}").parse().context("--api-key-b")?),
        None => anyhow::bail!("callback-isolation needs --api-key (tenant A) and --api-key-b"),
    };
    let hang = Receiver::start(Duration::from_secs(3600), 200).await?;
    let rx = Receiver::start(Duration::ZERO, 200).await?;
    let carts_a = prepare(&ctx, &ctx.auth, a.hanging, &hang.url).await?;
    let carts_b = prepare(&ctx, &auth_b, a.callbacks, &rx.url).await?;
    confirm_all(&ctx, &ctx.auth, carts_a, None).await?;
    // Let A's callbacks reach the hanging receiver first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hang.hits().len() < a.hanging.min(64) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = hang.hits().len();
    let (sent, _) = confirm_all(&ctx, &auth_b, carts_b, Some(a.rate.unwrap_or(20.0))).await?;
    await_delivered(&rx, &sent, Duration::from_secs(60)).await;
    let lat = latencies(&rx, &sent);
    println!(
        "isolation: A's receiver holds {held} of {} callbacks; B: {} of {} delivered, p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        a.hanging,
        lat["delivered"],
        lat["expected"],
        lat["p50_ms"].as_f64().unwrap_or(0.0),
        lat["p99_ms"].as_f64().unwrap_or(0.0),
        lat["max_ms"].as_f64().unwrap_or(0.0),
    );
    Ok(serde_json::json!({ "a_hanging": a.hanging, "a_held": held, "b": lat }))
}

pub(crate) async fn outage(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let a = &ctx.args;
    let rx = Receiver::start(Duration::ZERO, 503).await?;
    let carts = prepare(&ctx, &ctx.auth, a.callbacks, &rx.url).await?;
    let rate = a.callbacks as f64 / a.outage.as_secs_f64();
    let start = Instant::now();
    let (sent, _) = confirm_all(&ctx, &ctx.auth, carts, Some(rate)).await?;
    tokio::time::sleep_until((start + a.outage).into()).await;
    let failed_during = rx.hits().len();
    rx.set_status(200);
    let back = Instant::now();
    await_delivered(&rx, &sent, Duration::from_secs(900)).await;
    let hits = rx.hits();
    let mut per_id: HashMap<&str, (usize, usize)> = HashMap::new();
    for h in &hits {
        let e = per_id.entry(h.webhook_id.as_str()).or_default();
        if h.status == 200 { e.0 += 1 } else { e.1 += 1 }
    }
    let delivered = per_id.values().filter(|(ok, _)| *ok >= 1).count();
    let twice = per_id.values().filter(|(ok, _)| *ok > 1).count();
    // The bulk drains at the delivery rate; a few callbacks that failed
    // during the outage wait for their retry time (the backoff) after it.
    let mut after: Vec<f64> = hits
        .iter()
        .filter(|h| h.status == 200)
        .map(|h| h.at.saturating_duration_since(back).as_secs_f64())
        .collect();
    after.sort_by(f64::total_cmp);
    let at = |q: f64| {
        after
            .get(((after.len() as f64 * q) as usize).min(after.len().saturating_sub(1)))
            .copied()
    };
    let p99_s = at(0.99).unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "outage_s": a.outage.as_secs_f64(),
        "confirmed": sent.len(),
        "webhook_ids": per_id.len(),
        "delivered_once": delivered - twice,
        "delivered_more_than_once": twice,
        "lost": sent.len() - delivered,
        "posts": hits.len(),
        "failed_attempts": hits.iter().filter(|h| h.status != 200).count(),
        "failed_attempts_during_outage": failed_during,
        "drain_99pct_s": p99_s,
        "drain_per_s": 0.99 * after.len() as f64 / p99_s,
        "drain_all_s": after.last().copied(),
    });
    println!("outage: {out}");
    Ok(out)
}
