//! The soak's load: paced writers on the seeded carts, checkout lifecycles
//! whose callbacks go to a local receiver, carts left to expire, and the
//! shared record of what the server acknowledged.

use std::{
    collections::HashMap,
    sync::{Mutex, atomic::AtomicI64},
};

use super::*;

/// What the server acknowledged for one cart: the lowest and highest
/// version a write of this run was answered with.
#[derive(Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) min: i64,
    pub(crate) max: i64,
}

/// A lifecycle cart and how far its checkout got (for the callback check).
#[derive(Clone)]
pub(crate) struct Checkout {
    pub(crate) id: String,
    pub(crate) submitted: bool,
}

/// State shared by the load, the watchers and the sampler.
pub(crate) struct Shared {
    /// Writers and lifecycles stop.
    pub(crate) stop_load: AtomicBool,
    /// Watchers catch up and stop.
    pub(crate) stop_watch: AtomicBool,
    pub(crate) acked: Mutex<HashMap<String, Acked>>,
    pub(crate) checkouts: Mutex<Vec<Checkout>>,
    /// Per-window latencies (swapped out by the sampler).
    pub(crate) write_window: Mutex<Histogram<u64>>,
    pub(crate) watch_window: Mutex<Histogram<u64>>,
    /// Whole-run errors by op and code.
    pub(crate) errors: Mutex<Stats>,
    pub(crate) errors_n: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) lifecycles: AtomicU64,
    pub(crate) events: AtomicU64,
    /// The run's callback receiver: cart id -> webhook-ids received.
    pub(crate) callbacks: Mutex<HashMap<String, Vec<String>>>,
    pub(crate) callback_posts: AtomicU64,
    /// Seconds since start of the latest event any watcher got (liveness).
    pub(crate) last_event: AtomicI64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            stop_load: AtomicBool::new(false),
            stop_watch: AtomicBool::new(false),
            acked: Mutex::new(HashMap::new()),
            checkouts: Mutex::new(Vec::new()),
            write_window: Mutex::new(histogram()),
            watch_window: Mutex::new(histogram()),
            errors: Mutex::new(Stats::default()),
            errors_n: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            lifecycles: AtomicU64::new(0),
            events: AtomicU64::new(0),
            callbacks: Mutex::new(HashMap::new()),
            callback_posts: AtomicU64::new(0),
            last_event: AtomicI64::new(0),
        }
    }

    pub(crate) fn ack(&self, cart: &proto::Cart) {
        let mut m = self.acked.lock().unwrap();
        let a = m.entry(cart.id.clone()).or_insert(Acked {
            min: cart.version,
            max: cart.version,
        });
        a.min = a.min.min(cart.version);
        a.max = a.max.max(cart.version);
    }

    pub(crate) fn error(&self, op: &str, code: Code) {
        self.errors.lock().unwrap().error(op, code);
        self.errors_n.fetch_add(1, Ordering::Relaxed);
    }

    fn write_latency(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.write_window.lock().unwrap().record(us).ok();
    }
}

/// Waits for the next paced slot; answers false once the load stops.
async fn pace(shared: &Shared, next: &mut Instant, interval: Duration) -> bool {
    let now = Instant::now();
    if *next > now {
        tokio::time::sleep_until((*next).into()).await;
    } else if now - *next > interval * 100 {
        // Far behind (a stall next door): do not burst to catch up.
        *next = now;
    }
    *next += interval;
    !shared.stop_load.load(Ordering::Relaxed)
}

/// `workers` writers sending AddItems to random seeded carts at `rate` in all.
pub(crate) fn writers(ctx: &Arc<Ctx>, shared: &Arc<Shared>, workers: usize, rate: f64) {
    let interval = Duration::from_secs_f64(workers as f64 / rate);
    for w in 0..workers {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed ^ (0x5eed_0000 + w as u64));
            let mut next = Instant::now() + interval.mul_f64(w as f64 / workers as f64);
            while pace(&shared, &mut next, interval).await {
                let r = proto::AddItemsRequest {
                    cart_id: ctx.carts[rng.below(ctx.carts.len())].clone(),
                    items: vec![item(&mut rng, ctx.args.skus)],
                    expected_version: 0,
                    request_id: ctx.request_id(),
                };
                let t = Instant::now();
                match c.add_items(ctx.req(r)).await {
                    Ok(resp) => {
                        shared.write_latency(t.elapsed());
                        shared.ack(&resp.into_inner());
                        shared.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => shared.error("add-items", e.code()),
                }
            }
        });
    }
}

/// Checkout lifecycles at `rate` per second: create (with callback URLs to
/// the receiver), add, submit, then confirm (2 in 4), cancel (1 in 4) or
/// leave awaiting the customer to expire (1 in 4); with `abandon`, every
/// 4th also leaves an ACTIVE cart behind to expire by its TTL.
pub(crate) fn lifecycles(
    ctx: &Arc<Ctx>,
    shared: &Arc<Shared>,
    rate: f64,
    callback: String,
    abandon: bool,
) {
    const WORKERS: usize = 4;
    let interval = Duration::from_secs_f64(WORKERS as f64 / rate);
    for w in 0..WORKERS {
        let (ctx, shared, callback) = (ctx.clone(), shared.clone(), callback.clone());
        tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed ^ (0x11fe_0000 + w as u64));
            let mut next = Instant::now() + interval.mul_f64(w as f64 / WORKERS as f64);
            let mut n = w;
            while pace(&shared, &mut next, interval).await {
                lifecycle(&ctx, &shared, &mut c, &mut rng, n, &callback, abandon).await;
                shared.lifecycles.fetch_add(1, Ordering::Relaxed);
                n += WORKERS;
            }
        });
    }
}

async fn lifecycle(
    ctx: &Ctx,
    shared: &Shared,
    c: &mut Client,
    rng: &mut Rng,
    n: usize,
    callback: &str,
    abandon: bool,
) {
    macro_rules! call {
        ($op:literal, $fut:expr) => {
            match $fut.await {
                Ok(r) => {
                    let cart = r.into_inner();
                    shared.ack(&cart);
                    cart
                }
                Err(e) => {
                    shared.error($op, e.code());
                    return;
                }
            }
        };
    }
    let mut create = new_cart_request(ctx, rng, n, 1);
    create.callback_url = format!("{callback}/confirmed");
    create.callback_cancel_url = format!("{callback}/cancelled");
    let cart = call!("create-cart", c.create_cart(ctx.req(create)));
    let id = cart.id.clone();
    let at = {
        let mut all = shared.checkouts.lock().unwrap();
        all.push(Checkout {
            id: id.clone(),
            submitted: false,
        });
        all.len() - 1
    };
    if abandon && n.is_multiple_of(4) {
        // An ACTIVE cart nobody comes back to: expires by CART_TTL.
        call!(
            "create-cart",
            c.create_cart(ctx.req(new_cart_request(ctx, rng, n, 1)))
        );
    }
    let add = proto::AddItemsRequest {
        cart_id: id.clone(),
        items: vec![item(rng, ctx.args.skus)],
        expected_version: 0,
        request_id: ctx.request_id(),
    };
    call!("add-items", c.add_items(ctx.req(add)));
    let submit = proto::SubmitCartRequest {
        cart_id: id.clone(),
        request_id: ctx.request_id(),
        ..Default::default()
    };
    call!("submit-cart", c.submit_cart(ctx.req(submit)));
    if let Some(ch) = shared.checkouts.lock().unwrap().get_mut(at) {
        ch.submitted = true;
    }
    match n / 4 % 4 {
        0 | 1 => {
            let r = proto::ConfirmCartRequest {
                cart_id: id,
                actor: proto::Actor::Customer as i32,
                request_id: ctx.request_id(),
                ..Default::default()
            };
            call!("confirm-cart", c.confirm_cart(ctx.req(r)));
        }
        2 => {
            let r = proto::CancelCartRequest {
                cart_id: id,
                reason: "soak".into(),
                request_id: ctx.request_id(),
                ..Default::default()
            };
            call!("cancel-cart", c.cancel_cart(ctx.req(r)));
        }
        _ => {} // left awaiting the customer: expires by CART_CHECKOUT_TIMEOUT
    }
}

/// The local callback receiver: answers 200 to every POST and records its
/// `webhook-id` under the body's `cart_id`. Answers its base URL.
pub(crate) async fn receiver(shared: Arc<Shared>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| on_callback(shared.clone(), req));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

async fn on_callback(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let cart = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["cart_id"].as_str().map(str::to_string))
        .unwrap_or_default();
    shared.callback_posts.fetch_add(1, Ordering::Relaxed);
    shared
        .callbacks
        .lock()
        .unwrap()
        .entry(cart)
        .or_default()
        .push(id);
    Ok(hyper::Response::new(http_body_util::Full::new(
        bytes::Bytes::from_static(b"ok"),
    )))
}
