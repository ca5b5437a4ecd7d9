//! The command line: the scenarios and every flag.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
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
pub(crate) struct Args {
    #[arg(long, value_enum, default_value_t = Scenario::AddItems)]
    pub(crate) scenario: Scenario,
    /// Server address (only loopback is expected).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub(crate) addr: String,
    /// Address of a second replica for watchers (watch-latency: other replica).
    #[arg(long)]
    pub(crate) watch_addr: Option<String>,
    /// API key (sent as `authorization: Bearer <key>`).
    #[arg(long, env = "CART_BENCH_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Deadline sent with every request (`grpc-timeout`); unset = none.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) deadline: Option<Duration>,
    /// First pause after a RESOURCE_EXHAUSTED answer that carries no
    /// RetryInfo (the server's RetryInfo delay wins); x1.6 per refusal in a
    /// row, jittered +-20%, as gRPC clients retry (gRFC A6).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub(crate) overload_backoff: Duration,
    /// Longest pause after refusals in a row.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) overload_backoff_max: Duration,
    /// Tenant B's API key (fairness, callback-isolation).
    #[arg(long, env = "CART_BENCH_API_KEY_B", hide_env_values = true)]
    pub(crate) api_key_b: Option<String>,
    /// fairness: tenant B's rate (requests/s).
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rate_b: f64,
    /// fairness: tenant B's workers.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency_b: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// HTTP/2 connections the watch streams are spread over (a server
    /// allows a bounded number of concurrent streams per connection).
    #[arg(long, default_value_t = 64)]
    pub(crate) watch_connections: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// A fixed number of calls (units of work) instead of --duration, with
    /// no warm-up: the run ends when they are done (e.g. for WAL per call).
    #[arg(long)]
    pub(crate) calls: Option<u64>,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Total target rate (requests/s, lifecycles/s for lifecycle); unset = as fast as possible.
    /// Latency is measured from each request's scheduled time (no coordinated omission).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Carts to seed.
    #[arg(long, default_value_t = 1000)]
    pub(crate) carts: usize,
    /// Lines each seeded cart starts with.
    #[arg(long, default_value_t = 3)]
    pub(crate) seed_items: usize,
    /// Distinct SKUs AddItems picks from.
    #[arg(long, default_value_t = 20)]
    pub(crate) skus: usize,
    /// Seeded carts get SKUs 0..--seed-items, one line each (exactly
    /// --seed-items lines) instead of --seed-items random picks of --skus.
    #[arg(long)]
    pub(crate) distinct_lines: bool,
    /// Use these carts (a file of ids, one a line) instead of seeding or listing.
    #[arg(long)]
    pub(crate) cart_ids: Option<PathBuf>,
    /// list: carts per page.
    #[arg(long, default_value_t = 20)]
    pub(crate) page_size: i32,
    /// list: statuses to filter by, comma-separated (CONFIRMED or CART_STATUS_CONFIRMED).
    #[arg(long, value_delimiter = ',')]
    pub(crate) list_status: Vec<String>,
    /// list: the customer to filter by; `{n}` in it is replaced by a random
    /// number below --customers for each call (e.g. `bench-customer-{n}`).
    #[arg(long)]
    pub(crate) list_customer: Option<String>,
    /// list: how many customers `{n}` ranges over.
    #[arg(long, default_value_t = 1000)]
    pub(crate) customers: usize,
    /// Reuse the tenant's existing carts (ListCarts) instead of creating new ones.
    #[arg(long)]
    pub(crate) no_seed: bool,
    /// PRNG seed.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Send a request_id (idempotency key) with every mutation.
    #[arg(long)]
    pub(crate) request_ids: bool,
    /// Watchers (watch-latency, watchers).
    #[arg(long, default_value_t = 1000)]
    pub(crate) watchers: usize,
    /// Server process id: report its VmRSS from /proc.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// The process serving the watchers (watch-latency): its CPU time per
    /// delivered event.
    #[arg(long)]
    pub(crate) watch_server_pid: Option<u32>,
    /// The server's operations address (CART_METRICS_ADDR, host:port) for /metrics (churn, soak).
    #[arg(long)]
    pub(crate) metrics_addr: Option<String>,
    /// Open/close cycles (churn).
    #[arg(long, default_value_t = 120_000)]
    pub(crate) cycles: u64,
    /// Streams between open and close at once (churn).
    #[arg(long, default_value_t = 256)]
    pub(crate) in_flight: usize,
    /// Reconnecting WatchCart watchers (soak).
    #[arg(long, default_value_t = 200)]
    pub(crate) cart_watchers: usize,
    /// Resuming WatchCarts watchers (soak).
    #[arg(long, default_value_t = 4)]
    pub(crate) tenant_watchers: usize,
    /// Checkout lifecycles per second, with callbacks (soak).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) lifecycle_rate: f64,
    /// Sampling period (soak).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) sample_every: Duration,
    /// Time before trends are judged (soak).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) soak_warmup: Duration,
    /// Callbacks (callback scenarios): carts confirmed.
    #[arg(long, default_value_t = 2000)]
    pub(crate) callbacks: usize,
    /// The callback receiver answers after this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) receiver_delay: Duration,
    /// Callbacks of tenant A to the hanging receiver (callback-isolation).
    #[arg(long, default_value_t = 200)]
    pub(crate) hanging: usize,
    /// How long the receiver answers 503 (callback-outage).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) outage: Duration,
    /// pg-proxy: address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) proxy_listen: String,
    /// pg-proxy: the Postgres address to forward to.
    #[arg(long, default_value = "127.0.0.1:5432")]
    pub(crate) proxy_upstream: String,
    /// deadlines: the pg-proxy process to stall and resume.
    #[arg(long)]
    pub(crate) proxy_pid: Option<u32>,
    /// deadlines: measured time after the store is back.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) after: Duration,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Label stored in the JSON (e.g. the commit or variant measured).
    #[arg(long, default_value = "")]
    pub(crate) label: String,
}
