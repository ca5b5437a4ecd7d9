//! Driving the closed- or open-loop scenarios: one unit of work of each
//! (get-cart, add-items, lifecycle, list) and the workers that run them.

use super::*;

/// One unit of work of a closed-loop scenario; records into `stats`.
pub(crate) async fn step(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    scenario: Scenario,
    stats: &mut Stats,
    started: Instant,
) {
    match scenario {
        Scenario::GetCart => get_cart(ctx, c, rng, stats, started).await,
        Scenario::AddItems | Scenario::Overload => add_items(ctx, c, rng, stats, started).await,
        Scenario::Mixed => {
            if rng.below(100) < 80 {
                get_cart(ctx, c, rng, stats, started).await
            } else {
                add_items(ctx, c, rng, stats, started).await
            }
        }
        Scenario::Lifecycle => lifecycle(ctx, c, rng, stats, started).await,
        Scenario::List => crate::list::list_carts(ctx, c, rng, stats, started).await,
        _ => unreachable!("not a closed-loop scenario"),
    }
}

pub(crate) async fn get_cart(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    stats: &mut Stats,
    started: Instant,
) {
    let id = ctx.carts[rng.below(ctx.carts.len())].clone();
    match c
        .get_cart(ctx.req(proto::GetCartRequest { cart_id: id }))
        .await
    {
        Ok(_) => {
            rng.refusals = 0;
            stats.record("get-cart", started.elapsed())
        }
        Err(e) => ctx.failed(rng, stats, "get-cart", &e).await,
    }
}

pub(crate) async fn add_items(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    stats: &mut Stats,
    started: Instant,
) {
    let id = ctx.carts[rng.below(ctx.carts.len())].clone();
    let r = proto::AddItemsRequest {
        cart_id: id,
        items: vec![item(rng, ctx.args.skus)],
        expected_version: 0,
        request_id: ctx.request_id(),
    };
    match c.add_items(ctx.req(r)).await {
        Ok(_) => {
            rng.refusals = 0;
            stats.record("add-items", started.elapsed())
        }
        Err(e) => ctx.failed(rng, stats, "add-items", &e).await,
    }
}

pub(crate) async fn lifecycle(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    stats: &mut Stats,
    started: Instant,
) {
    macro_rules! call {
        ($op:literal, $fut:expr) => {{
            let t = Instant::now();
            match $fut.await {
                Ok(r) => {
                    stats.record($op, t.elapsed());
                    r.into_inner()
                }
                Err(e) => {
                    stats.error($op, e.code());
                    return;
                }
            }
        }};
    }
    let n = rng.below(1_000_000);
    let cart = call!(
        "create-cart",
        c.create_cart(ctx.req(new_cart_request(ctx, rng, n, 1)))
    );
    for _ in 0..3 {
        let r = proto::AddItemsRequest {
            cart_id: cart.id.clone(),
            items: vec![item(rng, ctx.args.skus)],
            expected_version: 0,
            request_id: ctx.request_id(),
        };
        call!("add-items", c.add_items(ctx.req(r)));
    }
    let r = proto::SubmitCartRequest {
        cart_id: cart.id.clone(),
        request_id: ctx.request_id(),
        ..Default::default()
    };
    call!("submit-cart", c.submit_cart(ctx.req(r)));
    let r = proto::ConfirmCartRequest {
        cart_id: cart.id.clone(),
        actor: proto::Actor::Customer as i32,
        request_id: ctx.request_id(),
        ..Default::default()
    };
    call!("confirm-cart", c.confirm_cart(ctx.req(r)));
    stats.record("lifecycle", started.elapsed());
}

/// Runs `scenario` closed-loop (or paced by `rate`) on `concurrency` workers
/// for warmup + duration, or, given `calls`, for that many units of work
/// with no warm-up; answers the stats of the measured part and its length.
pub(crate) async fn drive(
    ctx: Arc<Ctx>,
    scenario: Scenario,
    concurrency: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
    calls: Option<u64>,
) -> anyhow::Result<(Stats, Duration)> {
    let begin = Instant::now();
    let (measure_from, end) = match calls {
        // Bounded by the count; the time bound is only a backstop.
        Some(_) => (begin, begin + Duration::from_secs(24 * 3600)),
        None => (begin + warmup, begin + warmup + duration),
    };
    let remaining = Arc::new(std::sync::atomic::AtomicI64::new(
        calls.map_or(i64::MAX, |n| n as i64),
    ));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let ctx = ctx.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed.wrapping_add(w as u64 * 7919));
            let mut stats = Stats::default();
            let mut scratch = Stats::default();
            // Paced: each worker sends every `interval`, staggered.
            let interval = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r));
            let mut next = begin
                + interval
                    .map(|i| i.mul_f64(w as f64 / concurrency as f64))
                    .unwrap_or_default();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let started = match interval {
                    Some(i) => {
                        if next > now {
                            tokio::time::sleep_until(next.into()).await;
                        }
                        let s = next;
                        next += i;
                        s
                    }
                    None => now,
                };
                if started >= end || remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
                let into = if started >= measure_from {
                    &mut stats
                } else {
                    &mut scratch
                };
                step(&ctx, &mut c, &mut rng, scenario, into, started).await;
            }
            let warm: u64 = scratch.ops.values().map(|h| h.len()).sum();
            WARMUP_OPS.fetch_add(warm, Ordering::Relaxed);
            stats
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        total.merge(t.await?);
    }
    let measured = match calls {
        Some(_) => begin.elapsed(),
        None => duration,
    };
    Ok((total, measured))
}
