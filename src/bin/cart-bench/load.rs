//! Seeding carts and driving the closed- or open-loop scenarios.

use super::*;

/// xorshift64*: small, fast, deterministic per worker. It also carries the
/// worker's run of consecutive OVERLOADED answers (its backoff exponent),
/// since it is the one piece of state every call of a worker gets.
pub(crate) struct Rng {
    x: u64,
    /// Consecutive RESOURCE_EXHAUSTED answers; 0 after any other outcome.
    pub(crate) refusals: u32,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng {
            x: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            refusals: 0,
        }
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.x;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.x = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(crate) struct Ctx {
    pub(crate) args: Args,
    pub(crate) channels: Vec<Channel>,
    pub(crate) auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    pub(crate) carts: Vec<String>,
    pub(crate) request_seq: AtomicU64,
    pub(crate) run_id: u64,
}

impl Ctx {
    pub(crate) fn client(&self, worker: usize) -> Client {
        CartServiceClient::new(self.channels[worker % self.channels.len()].clone())
            .max_decoding_message_size(16 * 1024 * 1024)
    }

    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(d) = self.args.deadline {
            r.set_timeout(d);
        }
        r
    }

    /// Records a failed call; after an overload answer, backs off first.
    pub(crate) async fn failed(
        &self,
        rng: &mut Rng,
        stats: &mut Stats,
        op: &str,
        e: &tonic::Status,
    ) {
        // tonic's client answers its own deadline as CANCELLED "Timeout expired".
        let code = match e.code() {
            Code::Cancelled if e.message().contains("Timeout expired") => Code::DeadlineExceeded,
            c => c,
        };
        stats.error(op, code);
        // Codes no scenario expects: show what they were (a few).
        if matches!(
            code,
            Code::Unknown | Code::Cancelled | Code::Internal | Code::Unavailable
        ) && ODD_SHOWN.fetch_add(1, Ordering::Relaxed) < 5
        {
            eprintln!("  {op}: {code:?}: {e:?}");
        }
        if code == Code::ResourceExhausted {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            rng.refusals += 1;
            tokio::time::sleep(self.backoff(rng, e)).await;
        } else {
            rng.refusals = 0;
        }
    }

    /// How long to wait after the `rng.refusals`-th refusal in a row, as
    /// gRPC clients do (gRFC A6): the server's RetryInfo delay (else
    /// `--overload-backoff`) times 1.6 per earlier refusal, at most
    /// `--overload-backoff-max`, jittered +-20%.
    pub(crate) fn backoff(&self, rng: &mut Rng, e: &tonic::Status) -> Duration {
        use tonic_types::StatusExt as _;
        let base = e
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or(self.args.overload_backoff);
        let exp = 1.6f64.powi(rng.refusals.saturating_sub(1).min(30) as i32);
        let wait = base.mul_f64(exp).min(self.args.overload_backoff_max);
        wait.mul_f64(0.8 + 0.4 * (rng.below(1000) as f64 / 1000.0))
    }

    pub(crate) fn request_id(&self) -> String {
        if self.args.request_ids {
            let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
            format!("bench-{:x}-{n}", self.run_id)
        } else {
            String::new()
        }
    }
}

pub(crate) fn item(rng: &mut Rng, skus: usize) -> proto::ItemInput {
    item_n(rng.below(skus))
}

/// The line of SKU `n` (the same name and price every time).
pub(crate) fn item_n(n: usize) -> proto::ItemInput {
    proto::ItemInput {
        sku: format!("SKU-{n:04}"),
        name: format!("Bench item {n}"),
        quantity: 1,
        unit_price: format!("{}.{:02}", 1 + n % 50, (n * 37) % 100),
        list_price: String::new(),
        attributes: Default::default(),
    }
}

pub(crate) async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..connections.max(1) {
        let ch = Endpoint::from_shared(addr.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        out.push(ch);
    }
    Ok(out)
}

pub(crate) fn new_cart_request(
    ctx: &Ctx,
    rng: &mut Rng,
    n: usize,
    items: usize,
) -> proto::CreateCartRequest {
    proto::CreateCartRequest {
        customer_id: format!("bench-customer-{n}"),
        currency: "USD".into(),
        items: (0..items).map(|_| item(rng, ctx.args.skus)).collect(),
        request_id: ctx.request_id(),
        ..Default::default()
    }
}

/// Unexpected failures printed so far.
static ODD_SHOWN: AtomicU64 = AtomicU64::new(0);

/// The deadline of the calls that set a run up (seeding, listing carts).
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// Creates `--carts` carts (or lists the tenant's existing ones); answers their ids.
pub(crate) async fn seed(ctx: Arc<Ctx>) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    if let Some(path) = &ctx.args.cart_ids {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --cart-ids {}", path.display()))?;
        let ids: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            bail!("--cart-ids {}: no ids", path.display());
        }
        eprintln!("using {} carts from {}", ids.len(), path.display());
        return Ok(ids);
    }
    if ctx.args.no_seed {
        let mut c = ctx.client(0);
        let mut token = String::new();
        let mut ids = Vec::new();
        while ids.len() < ctx.args.carts {
            let mut req = ctx.req(proto::ListCartsRequest {
                statuses: vec![proto::CartStatus::Active as i32],
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            });
            // Setting up is not measured: --deadline is for the calls measured.
            req.set_timeout(SETUP_DEADLINE);
            let page = c.list_carts(req).await?.into_inner();
            ids.extend(page.carts.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        ids.truncate(ctx.args.carts);
        if ids.is_empty() {
            bail!("--no-seed: the tenant has no ACTIVE carts");
        }
        eprintln!("using {} existing carts", ids.len());
        return Ok(ids);
    }
    let workers = ctx.args.concurrency.clamp(1, 32);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed ^ ((w as u64 + 1) << 32));
            let mut ids = Vec::new();
            let mut n = w;
            while n < ctx.args.carts {
                let mut r = new_cart_request(&ctx, &mut rng, n, ctx.args.seed_items);
                if ctx.args.distinct_lines {
                    r.items = (0..ctx.args.seed_items).map(item_n).collect();
                }
                let cart = loop {
                    let mut req = ctx.req(r.clone());
                    req.set_timeout(SETUP_DEADLINE);
                    match c.create_cart(req).await {
                        Ok(cart) => break cart.into_inner(),
                        // Past the server's limit: back off as any client would.
                        Err(e) if e.code() == Code::ResourceExhausted => {
                            rng.refusals += 1;
                            let wait = ctx.backoff(&mut rng, &e);
                            tokio::time::sleep(wait).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                rng.refusals = 0;
                ids.push(cart.id);
                n += workers;
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(ctx.args.carts);
    for t in tasks {
        ids.extend(t.await??);
    }
    eprintln!(
        "seeded {} carts in {:.1}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

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

/// Two tenants on one replica: A closed-loop at `--concurrency` (none when
/// 0), B paced at `--rate-b`; answers both tenants' results.
pub(crate) async fn fairness(ctx_a: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx_a.args;
    let key_b = args
        .api_key_b
        .as_ref()
        .context("fairness needs --api-key-b (tenant B)")?;
    let ctx_b = Ctx {
        // B always seeds its own carts.
        args: Args {
            concurrency: args.concurrency_b,
            seed: args.seed ^ 0xB,
            no_seed: false,
            ..args.clone()
        },
        channels: connect(&args.addr, 2).await?,
        auth: Some(
            format!("Bearer {key_b}")
                .parse()
                .context("bad --api-key-b")?,
        ),
        carts: Vec::new(),
        request_seq: AtomicU64::new(0),
        run_id: ctx_a.run_id ^ 0xB,
    };
    let carts = seed(Arc::new(Ctx {
        args: ctx_b.args.clone(),
        channels: ctx_b.channels.clone(),
        auth: ctx_b.auth.clone(),
        carts: Vec::new(),
        request_seq: AtomicU64::new(0),
        run_id: ctx_b.run_id,
    }))
    .await?;
    let ctx_b = Arc::new(Ctx { carts, ..ctx_b });
    let (warmup, duration) = (args.warmup, args.duration);
    let a = async {
        if args.concurrency == 0 {
            return Ok((Stats::default(), duration));
        }
        drive(
            ctx_a.clone(),
            Scenario::AddItems,
            args.concurrency,
            None,
            warmup,
            duration,
            None,
        )
        .await
    };
    let b = drive(
        ctx_b.clone(),
        Scenario::AddItems,
        args.concurrency_b,
        Some(args.rate_b),
        warmup,
        duration,
        None,
    );
    let (a, b) = tokio::join!(a, b);
    let ((a, d), (b, _)) = (a?, b?);
    let secs = d.as_secs_f64();
    print_table(
        &format!(
            "tenant A: add-items closed loop, concurrency {} (load {})",
            args.concurrency,
            loadavg()
        ),
        &a,
        secs,
    );
    print_table(
        &format!("tenant B: add-items at {}/s", args.rate_b),
        &b,
        secs,
    );
    Ok(serde_json::json!({ "a": stats_json(&a, secs), "b": stats_json(&b, secs) }))
}
