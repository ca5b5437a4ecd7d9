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

mod args;
mod callbacks;
mod churn;
mod context;
mod fairness;
mod list;
mod load;
mod probe;
mod receiver;
mod seeding;
mod soak;
mod soak_load;
mod soak_watch;
mod stall;
mod stats;
mod steady;
mod watch;

use args::*;
use context::*;
use fairness::*;
use load::*;
use seeding::*;
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
