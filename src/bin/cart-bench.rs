//! Load generator for the cart service: drives a running server over gRPC
//! with the generated tonic client and reports throughput and latency
//! percentiles (HdrHistogram) as a table and as one JSON line.
//!
//! Every run is bounded (`--duration`), talks only to `--addr`, and seeds
//! its own carts unless `--no-seed`. See BENCHMARKS.md for the commands.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use cart_service::proto::{self, cart_service_client::CartServiceClient};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Wait until the server answers (health check) and print how long it took.
    Ready,
    /// Create the carts and stop.
    Seed,
    /// GetCart of random seeded carts.
    GetCart,
    /// AddItems of one random SKU to a random seeded cart.
    AddItems,
    /// 80% GetCart, 20% AddItems.
    Mixed,
    /// Create, 3 adds, submit, confirm.
    Lifecycle,
    /// Watchers on seeded carts while AddItems runs; commit-to-receipt latency.
    WatchLatency,
    /// Hold N WatchCart streams open; report server RSS and GetCart latency idle vs loaded.
    Watchers,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "cart-bench", about = "Load generator for cart.v1.CartService")]
struct Args {
    #[arg(long, value_enum, default_value_t = Scenario::AddItems)]
    scenario: Scenario,
    /// Server address (only loopback is expected).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Address of a second replica for watchers (watch-latency: other replica).
    #[arg(long)]
    watch_addr: Option<String>,
    /// API key (sent as `authorization: Bearer <key>`).
    #[arg(long, env = "CART_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// HTTP/2 connections the watch streams are spread over (a server
    /// allows a bounded number of concurrent streams per connection).
    #[arg(long, default_value_t = 64)]
    watch_connections: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Total target rate (requests/s, lifecycles/s for lifecycle); unset = as fast as possible.
    /// Latency is measured from each request's scheduled time (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Carts to seed.
    #[arg(long, default_value_t = 1000)]
    carts: usize,
    /// Lines each seeded cart starts with.
    #[arg(long, default_value_t = 3)]
    seed_items: usize,
    /// Distinct SKUs AddItems picks from.
    #[arg(long, default_value_t = 20)]
    skus: usize,
    /// Reuse the tenant's existing carts (ListCarts) instead of creating new ones.
    #[arg(long)]
    no_seed: bool,
    /// PRNG seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Send a request_id (idempotency key) with every mutation.
    #[arg(long)]
    request_ids: bool,
    /// Watchers (watch-latency, watchers).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Server process id: report its VmRSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Label stored in the JSON (e.g. the commit or variant measured).
    #[arg(long, default_value = "")]
    label: String,
}

type Client = CartServiceClient<Channel>;

/// Operations done during warm-ups (for CPU time per operation).
static WARMUP_OPS: AtomicU64 = AtomicU64::new(0);

/// xorshift64*: small, fast, deterministic per worker.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Ctx {
    args: Args,
    channels: Vec<Channel>,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    carts: Vec<String>,
    request_seq: AtomicU64,
    run_id: u64,
}

impl Ctx {
    fn client(&self, worker: usize) -> Client {
        CartServiceClient::new(self.channels[worker % self.channels.len()].clone())
            .max_decoding_message_size(16 * 1024 * 1024)
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    fn request_id(&self) -> String {
        if self.args.request_ids {
            let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
            format!("bench-{:x}-{n}", self.run_id)
        } else {
            String::new()
        }
    }
}

fn item(rng: &mut Rng, skus: usize) -> proto::ItemInput {
    let n = rng.below(skus);
    proto::ItemInput {
        sku: format!("SKU-{n:04}"),
        name: format!("Bench item {n}"),
        quantity: 1,
        unit_price: format!("{}.{:02}", 1 + n % 50, (n * 37) % 100),
        list_price: String::new(),
        attributes: Default::default(),
    }
}

/// Latency histogram in microseconds, 1 us .. 60 s, 3 significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Per-operation results of one worker (or merged).
#[derive(Default)]
struct Stats {
    ops: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn record(&mut self, op: &'static str, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.ops.entry(op).or_insert_with(histogram).record(us).ok();
    }
    fn error(&mut self, op: &str, code: Code) {
        *self.errors.entry(format!("{op}:{code:?}")).or_default() += 1;
    }
    fn merge(&mut self, other: Stats) {
        for (op, h) in other.ops {
            self.ops.entry(op).or_insert_with(histogram).add(h).ok();
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process in clock ticks (1/100 s on Linux), from /proc.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
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

fn new_cart_request(ctx: &Ctx, rng: &mut Rng, n: usize, items: usize) -> proto::CreateCartRequest {
    proto::CreateCartRequest {
        customer_id: format!("bench-customer-{n}"),
        currency: "USD".into(),
        items: (0..items).map(|_| item(rng, ctx.args.skus)).collect(),
        request_id: ctx.request_id(),
        ..Default::default()
    }
}

/// Creates `--carts` carts (or lists the tenant's existing ones); answers their ids.
async fn seed(ctx: Arc<Ctx>) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    if ctx.args.no_seed {
        let mut c = ctx.client(0);
        let mut token = String::new();
        let mut ids = Vec::new();
        while ids.len() < ctx.args.carts {
            let page = c
                .list_carts(ctx.req(proto::ListCartsRequest {
                    statuses: vec![proto::CartStatus::Active as i32],
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
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
                let r = new_cart_request(&ctx, &mut rng, n, ctx.args.seed_items);
                let cart = c.create_cart(ctx.req(r)).await?.into_inner();
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
async fn step(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    scenario: Scenario,
    stats: &mut Stats,
    started: Instant,
) {
    match scenario {
        Scenario::GetCart => get_cart(ctx, c, rng, stats, started).await,
        Scenario::AddItems => add_items(ctx, c, rng, stats, started).await,
        Scenario::Mixed => {
            if rng.below(100) < 80 {
                get_cart(ctx, c, rng, stats, started).await
            } else {
                add_items(ctx, c, rng, stats, started).await
            }
        }
        Scenario::Lifecycle => lifecycle(ctx, c, rng, stats, started).await,
        _ => unreachable!("not a closed-loop scenario"),
    }
}

async fn get_cart(ctx: &Ctx, c: &mut Client, rng: &mut Rng, stats: &mut Stats, started: Instant) {
    let id = ctx.carts[rng.below(ctx.carts.len())].clone();
    match c
        .get_cart(ctx.req(proto::GetCartRequest { cart_id: id }))
        .await
    {
        Ok(_) => stats.record("get-cart", started.elapsed()),
        Err(e) => stats.error("get-cart", e.code()),
    }
}

async fn add_items(ctx: &Ctx, c: &mut Client, rng: &mut Rng, stats: &mut Stats, started: Instant) {
    let id = ctx.carts[rng.below(ctx.carts.len())].clone();
    let r = proto::AddItemsRequest {
        cart_id: id,
        items: vec![item(rng, ctx.args.skus)],
        expected_version: 0,
        request_id: ctx.request_id(),
    };
    match c.add_items(ctx.req(r)).await {
        Ok(_) => stats.record("add-items", started.elapsed()),
        Err(e) => stats.error("add-items", e.code()),
    }
}

async fn lifecycle(ctx: &Ctx, c: &mut Client, rng: &mut Rng, stats: &mut Stats, started: Instant) {
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
/// for warmup + duration; answers the stats of the measured part.
async fn drive(
    ctx: Arc<Ctx>,
    scenario: Scenario,
    concurrency: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Stats, Duration)> {
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let ctx = ctx.clone();
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
                if started >= end {
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
    Ok((total, duration))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn op_json(h: &Histogram<u64>, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "rate": h.len() as f64 / secs,
        "mean_ms": h.mean() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn print_table(title: &str, stats: &Stats, secs: f64) {
    println!("{title}");
    println!(
        "  {:<14} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (op, h) in &stats.ops {
        println!(
            "  {:<14} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            op,
            h.len(),
            h.len() as f64 / secs,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
    }
    for (k, v) in &stats.errors {
        println!("  error {k}: {v}");
    }
}

fn stats_json(stats: &Stats, secs: f64) -> serde_json::Value {
    let ops: serde_json::Map<String, serde_json::Value> = stats
        .ops
        .iter()
        .map(|(op, h)| (op.to_string(), op_json(h, secs)))
        .collect();
    serde_json::json!({ "ops": ops, "errors": stats.errors })
}

fn timestamp_to_system(t: &prost_types::Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
}

/// N watchers on seeded carts (on `--watch-addr` when given) while AddItems
/// runs at `--rate`; latency = receipt time - event occurred_at.
async fn watch_latency(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let watch_addr = args.watch_addr.clone().unwrap_or(args.addr.clone());
    let watch_channels = connect(&watch_addr, args.watch_connections).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Instant::now() + args.warmup;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stats>();
    let opened = Arc::new(AtomicU64::new(0));
    for w in 0..args.watchers {
        let mut c = CartServiceClient::new(watch_channels[w % watch_channels.len()].clone());
        let req = ctx.req(proto::WatchCartRequest {
            cart_id: ctx.carts[w % ctx.carts.len()].clone(),
            after_version: 0,
        });
        let (stop, tx, opened) = (stop.clone(), tx.clone(), opened.clone());
        tokio::spawn(async move {
            let mut stats = Stats::default();
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
                                    continue; // the snapshot, not a change
                                }
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
    let (writes, secs) = drive(
        ctx.clone(),
        Scenario::AddItems,
        args.concurrency,
        args.rate,
        args.warmup,
        args.duration,
    )
    .await?;
    // Give in-flight events a moment, then stop the watchers.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    Ok(
        serde_json::json!({ "watchers_open": open, "watch_addr": watch_addr, "result": stats_json(&all, secs) }),
    )
}

/// Holds N WatchCart streams; GetCart latency idle vs with the streams open; server RSS.
async fn watchers(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let rss_before = rss_kib(args.server_pid);
    let (idle, secs) = drive(
        ctx.clone(),
        Scenario::GetCart,
        args.concurrency,
        args.rate,
        args.warmup,
        args.duration,
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let watch_channels = connect(&args.addr, args.watch_connections).await?;
    const OPENING: usize = 256;
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
            // At most OPENING streams between request and first event (the
            // snapshot), as clients arriving over time would be.
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
                    while !stop.load(Ordering::Relaxed) {
                        tokio::select! {
                            m = stream.message() => if !matches!(m, Ok(Some(_))) { break },
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
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
    )
    .await?;
    let rss_loaded = rss_kib(args.server_pid);
    stop.store(true, Ordering::Relaxed);
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

/// Polls the health service until it answers SERVING; prints the time taken.
async fn ready(args: &Args) -> anyhow::Result<serde_json::Value> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(ep) = Endpoint::from_shared(args.addr.clone())
            && let Ok(ch) = ep
                .connect_timeout(Duration::from_millis(200))
                .connect()
                .await
        {
            let mut h = HealthClient::new(ch);
            if let Ok(r) = h
                .check(HealthCheckRequest {
                    service: "cart.v1.CartService".into(),
                })
                .await
                && r.into_inner().status == 1
            {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not become ready in 30s", args.addr);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waited = started.elapsed();
    let rss = rss_kib(args.server_pid);
    println!(
        "ready after {:.0} ms; server RSS {:?} KiB",
        waited.as_secs_f64() * 1000.0,
        rss
    );
    Ok(serde_json::json!({ "ready_ms": waited.as_secs_f64() * 1000.0, "rss_kib": rss }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.duration.is_zero() {
        bail!("--concurrency and --duration must be positive");
    }
    let load_before = loadavg();
    let result = if args.scenario == Scenario::Ready {
        ready(&args).await?
    } else {
        let auth = match &args.api_key {
            Some(k) => Some(
                format!("Bearer {k}")
                    .parse()
                    .context("API key is not valid metadata")?,
            ),
            None => None,
        };
        let channels = connect(&args.addr, args.connections).await?;
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let ctx = Arc::new(Ctx {
            args: args.clone(),
            channels,
            auth,
            carts: Vec::new(),
            request_seq: AtomicU64::new(0),
            run_id,
        });
        let carts = if args.scenario != Scenario::Lifecycle || args.no_seed {
            seed(ctx.clone()).await?
        } else {
            Vec::new()
        };
        let mut ctx = Arc::try_unwrap(ctx).map_err(|_| anyhow::anyhow!("seeding still running"))?;
        ctx.carts = carts;
        let ctx = Arc::new(ctx);
        let rss_start = rss_kib(args.server_pid);
        let mut out = match args.scenario {
            Scenario::Seed => serde_json::json!({ "carts": ctx.carts.len() }),
            Scenario::WatchLatency => watch_latency(ctx.clone()).await?,
            Scenario::Watchers => watchers(ctx.clone()).await?,
            s => {
                let (cpu0, self0) = (cpu_ticks(args.server_pid), cpu_ticks(None));
                let (stats, d) = drive(
                    ctx.clone(),
                    s,
                    args.concurrency,
                    args.rate,
                    args.warmup,
                    args.duration,
                )
                .await?;
                let secs = d.as_secs_f64();
                print_table(
                    &format!(
                        "{:?} concurrency {} duration {:?} rate {:?} (load {})",
                        s,
                        args.concurrency,
                        args.duration,
                        args.rate,
                        loadavg()
                    ),
                    &stats,
                    secs,
                );
                let mut out = stats_json(&stats, secs);
                // CPU per operation: robust to machine load, for A/B of builds.
                let ops = stats.ops.values().map(|h| h.len()).sum::<u64>()
                    + WARMUP_OPS.load(Ordering::Relaxed);
                let per_op = |a: Option<u64>, b: Option<u64>| {
                    Some((b? - a?) as f64 * 10_000.0 / ops.max(1) as f64)
                };
                let server_us = per_op(cpu0, cpu_ticks(args.server_pid));
                let bench_us = per_op(self0, cpu_ticks(None));
                if let Some(us) = server_us {
                    println!(
                        "  server CPU {us:.0} us/op; bench client CPU {:.0} us/op",
                        bench_us.unwrap_or(f64::NAN)
                    );
                }
                out["server_cpu_us_per_op"] = serde_json::json!(server_us);
                out["bench_cpu_us_per_op"] = serde_json::json!(bench_us);
                out
            }
        };
        out["rss_kib_start"] = serde_json::json!(rss_start);
        out["rss_kib_end"] = serde_json::json!(rss_kib(args.server_pid));
        out
    };
    let json = serde_json::json!({
        "scenario": format!("{:?}", args.scenario),
        "label": args.label,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "duration_s": args.duration.as_secs_f64(),
        "rate": args.rate,
        "carts": args.carts,
        "skus": args.skus,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "result": result,
    });
    let line = serde_json::to_string(&json)?;
    println!("JSON {line}");
    if let Some(path) = &args.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
