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
    /// AddItems closed-loop far past capacity (e.g. --concurrency 640
    /// --deadline 200ms): goodput, p99 of OK calls, and how calls failed.
    Overload,
    /// Tenant A (--api-key) runs AddItems closed-loop at --concurrency
    /// while tenant B (--api-key-b) runs it paced at --rate-b: B's latency
    /// and errors, to compare with B alone (--concurrency 0 runs B alone).
    Fairness,
    /// Open WatchCart, read the first event, close; `--cycles` times. Server RSS
    /// and the open-streams gauge against the targets (RELIABILITY.md).
    Churn,
    /// Mixed steady load for `--duration`, sampled; fails on an upward trend, a
    /// missed or repeated event, or a lost callback (scripts/soak).
    Soak,
    /// Confirm --callbacks carts (at --rate) that call a local receiver back; delivered/s and latency.
    Callbacks,
    /// Tenant A's receiver hangs on --hanging callbacks; tenant B confirms --callbacks at --rate.
    CallbackIsolation,
    /// The receiver answers 503 for --outage while carts are confirmed, then 200.
    CallbackOutage,
    /// A TCP proxy to Postgres (--proxy-listen -> --proxy-upstream) that
    /// stops forwarding on SIGUSR1 and forwards again on SIGUSR2; runs until killed.
    PgProxy,
    /// AddItems with --deadline while the --proxy-pid proxy stalls Postgres
    /// for --duration (after --warmup, before --after): call durations,
    /// outcomes and pool use per phase.
    Deadlines,
    /// ListCarts pages (--page-size), filtered by --list-status and/or
    /// --list-customer; carts per page in the result.
    List,
    /// Paced AddItems (--rate) on the seeded carts plus checkout lifecycles
    /// (--lifecycle-rate) that all end final, with callbacks; add-items
    /// latency per --sample-every window (bench/storage.sh, steady state).
    Steady,
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
    /// Deadline sent with every request (`grpc-timeout`); unset = none.
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// First pause after a RESOURCE_EXHAUSTED answer that carries no
    /// RetryInfo (the server's RetryInfo delay wins); x1.6 per refusal in a
    /// row, jittered +-20%, as gRPC clients retry (gRFC A6).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    overload_backoff: Duration,
    /// Longest pause after refusals in a row.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    overload_backoff_max: Duration,
    /// Tenant B's API key (fairness, callback-isolation).
    #[arg(long, env = "CART_BENCH_API_KEY_B", hide_env_values = true)]
    api_key_b: Option<String>,
    /// fairness: tenant B's rate (requests/s).
    #[arg(long, default_value_t = 200.0)]
    rate_b: f64,
    /// fairness: tenant B's workers.
    #[arg(long, default_value_t = 8)]
    concurrency_b: usize,
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
    /// A fixed number of calls (units of work) instead of --duration, with
    /// no warm-up: the run ends when they are done (e.g. for WAL per call).
    #[arg(long)]
    calls: Option<u64>,
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
    /// Seeded carts get SKUs 0..--seed-items, one line each (exactly
    /// --seed-items lines) instead of --seed-items random picks of --skus.
    #[arg(long)]
    distinct_lines: bool,
    /// Use these carts (a file of ids, one a line) instead of seeding or listing.
    #[arg(long)]
    cart_ids: Option<PathBuf>,
    /// list: carts per page.
    #[arg(long, default_value_t = 20)]
    page_size: i32,
    /// list: statuses to filter by, comma-separated (CONFIRMED or CART_STATUS_CONFIRMED).
    #[arg(long, value_delimiter = ',')]
    list_status: Vec<String>,
    /// list: the customer to filter by; `{n}` in it is replaced by a random
    /// number below --customers for each call (e.g. `bench-customer-{n}`).
    #[arg(long)]
    list_customer: Option<String>,
    /// list: how many customers `{n}` ranges over.
    #[arg(long, default_value_t = 1000)]
    customers: usize,
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
    /// The process serving the watchers (watch-latency): its CPU time per
    /// delivered event.
    #[arg(long)]
    watch_server_pid: Option<u32>,
    /// The server's operations address (CART_METRICS_ADDR, host:port) for /metrics (churn, soak).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Open/close cycles (churn).
    #[arg(long, default_value_t = 120_000)]
    cycles: u64,
    /// Streams between open and close at once (churn).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Reconnecting WatchCart watchers (soak).
    #[arg(long, default_value_t = 200)]
    cart_watchers: usize,
    /// Resuming WatchCarts watchers (soak).
    #[arg(long, default_value_t = 4)]
    tenant_watchers: usize,
    /// Checkout lifecycles per second, with callbacks (soak).
    #[arg(long, default_value_t = 2.0)]
    lifecycle_rate: f64,
    /// Sampling period (soak).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// Time before trends are judged (soak).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    soak_warmup: Duration,
    /// Callbacks (callback scenarios): carts confirmed.
    #[arg(long, default_value_t = 2000)]
    callbacks: usize,
    /// The callback receiver answers after this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    receiver_delay: Duration,
    /// Callbacks of tenant A to the hanging receiver (callback-isolation).
    #[arg(long, default_value_t = 200)]
    hanging: usize,
    /// How long the receiver answers 503 (callback-outage).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// pg-proxy: address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    proxy_listen: String,
    /// pg-proxy: the Postgres address to forward to.
    #[arg(long, default_value = "127.0.0.1:5432")]
    proxy_upstream: String,
    /// deadlines: the pg-proxy process to stall and resume.
    #[arg(long)]
    proxy_pid: Option<u32>,
    /// deadlines: measured time after the store is back.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    after: Duration,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Label stored in the JSON (e.g. the commit or variant measured).
    #[arg(long, default_value = "")]
    label: String,
}

mod callbacks;
mod churn;
mod list;
mod load;
mod probe;
mod receiver;
mod soak;
mod soak_load;
mod soak_watch;
mod stall;
mod stats;
mod steady;
mod watch;

use load::*;
use stats::*;
use watch::*;

type Client = CartServiceClient<Channel>;

/// Operations done during warm-ups (for CPU time per operation).
static WARMUP_OPS: AtomicU64 = AtomicU64::new(0);
/// Calls answered, whatever the outcome, warm-up included (CPU per call).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Calls refused with RESOURCE_EXHAUSTED, warm-up included.
static REFUSED: AtomicU64 = AtomicU64::new(0);

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
    let alone = args.scenario == Scenario::Fairness && args.concurrency == 0;
    if (args.concurrency == 0 && !alone) || args.duration.is_zero() {
        bail!("--concurrency and --duration must be positive");
    }
    let load_before = loadavg();
    let result = if args.scenario == Scenario::Ready {
        ready(&args).await?
    } else if args.scenario == Scenario::PgProxy {
        stall::pg_proxy(&args).await?
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
        let callback_scenario = matches!(
            args.scenario,
            Scenario::Callbacks | Scenario::CallbackIsolation | Scenario::CallbackOutage
        );
        let needs_carts = !callback_scenario
            && match args.scenario {
                Scenario::Lifecycle => args.no_seed,
                Scenario::List => false,
                _ => true,
            };
        let carts = if needs_carts {
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
            Scenario::Fairness => fairness(ctx.clone()).await?,
            Scenario::Deadlines => stall::deadlines(ctx.clone()).await?,
            Scenario::Churn => churn::churn(ctx.clone()).await?,
            Scenario::Soak => soak::soak(ctx.clone()).await?,
            Scenario::Callbacks => callbacks::callbacks(ctx.clone()).await?,
            Scenario::CallbackIsolation => callbacks::isolation(ctx.clone()).await?,
            Scenario::CallbackOutage => callbacks::outage(ctx.clone()).await?,
            Scenario::Steady => steady::steady(ctx.clone()).await?,
            s => {
                let (cpu0, self0) = (cpu_ticks(args.server_pid), cpu_ticks(None));
                let (stats, d) = drive(
                    ctx.clone(),
                    s,
                    args.concurrency,
                    args.rate,
                    args.warmup,
                    args.duration,
                    args.calls,
                )
                .await?;
                let secs = d.as_secs_f64();
                print_table(
                    &format!(
                        "{:?} concurrency {} duration {:.1}s calls {:?} rate {:?} (load {})",
                        s,
                        args.concurrency,
                        secs,
                        args.calls,
                        args.rate,
                        loadavg()
                    ),
                    &stats,
                    secs,
                );
                let mut out = stats_json(&stats, secs);
                if s == Scenario::List {
                    out["carts_per_page"] = serde_json::json!(list::carts_per_page());
                    println!("  carts per page: {:.1}", list::carts_per_page());
                }
                // CPU per operation: robust to machine load, for A/B of builds.
                let ops = stats.ops.values().map(|h| h.len()).sum::<u64>()
                    + WARMUP_OPS.load(Ordering::Relaxed);
                let per_op = |a: Option<u64>, b: Option<u64>| {
                    Some((b? - a?) as f64 * 10_000.0 / ops.max(1) as f64)
                };
                // Without --server-pid, cpu_ticks reads this process: no server figure then.
                let server_us = match args.server_pid {
                    Some(_) => per_op(cpu0, cpu_ticks(args.server_pid)),
                    None => None,
                };
                let bench_us = per_op(self0, cpu_ticks(None));
                if let Some(us) = server_us {
                    println!(
                        "  server CPU {us:.0} us/op; bench client CPU {:.0} us/op",
                        bench_us.unwrap_or(f64::NAN)
                    );
                }
                out["server_cpu_us_per_op"] = serde_json::json!(server_us);
                out["bench_cpu_us_per_op"] = serde_json::json!(bench_us);
                // Refused calls are calls too: the server's CPU per answer of any
                // kind, with the counts to split it (warm-up included in both).
                let (calls, refused) = (
                    CALLS.load(Ordering::Relaxed),
                    REFUSED.load(Ordering::Relaxed),
                );
                if let (Some(_), Some(a), Some(b)) =
                    (args.server_pid, cpu0, cpu_ticks(args.server_pid))
                {
                    let cpu_s = (b - a) as f64 / 100.0;
                    println!(
                        "  server CPU {:.2} s for {calls} calls ({:.0} us/call), {refused} refused, {ops} OK",
                        cpu_s,
                        cpu_s * 1e6 / calls.max(1) as f64
                    );
                    out["server_cpu_s"] = serde_json::json!(cpu_s);
                }
                out["calls_all"] = serde_json::json!(calls);
                out["calls_refused"] = serde_json::json!(refused);
                out["calls_ok"] = serde_json::json!(ops);
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
        "calls": args.calls,
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
    // Scenarios with targets (churn, soak) fail the command when one is missed.
    if json["result"]["pass"] == serde_json::json!(false) {
        std::process::exit(1);
    }
    Ok(())
}
