//! Settings: each is a flag and an environment variable (names from the
//! contract's Configuration table).

use std::{fmt, net::SocketAddr, time::Duration};

use clap::Parser;

pub use crate::telemetry::LogFormat;
use crate::{auth::keys::ApiKeys, domain::Currency};

#[derive(Parser, Clone)]
#[command(name = "cart-service", version, about = "gRPC cart service (cart.v1)")]
pub struct Config {
    /// gRPC address.
    #[arg(long, env = "CART_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,

    /// HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CART_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Postgres connection string; unset runs the in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// `tenant:key` (every scope) or `tenant:key:scope+scope` entries,
    /// comma-separated; with no keys file either, the server runs open as
    /// tenant `default`. Scopes: read, write, watch, customer, provider.
    #[arg(long, env = "CART_API_KEYS", value_parser = crate::auth::keys::parse_list, hide_env_values = true)]
    pub api_keys: Option<ApiKeys>,

    /// File of key entries, one a line (`#` comments), re-read when it
    /// changes and on SIGHUP; a malformed file keeps the previous keys.
    #[arg(long, env = "CART_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// How often the keys file is looked at for changes.
    #[arg(long, env = "CART_API_KEYS_POLL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub api_keys_poll: Duration,

    /// Calls this replica works on at once; past it calls fail at once with
    /// RESOURCE_EXHAUSTED (OVERLOADED). 0 adapts it to the measured latency
    /// (see --admission-target-latency) between 4 and 4 x the Postgres pool
    /// (64 x cores on the in-memory store); see BENCHMARKS.md.
    #[arg(long, env = "CART_MAX_IN_FLIGHT", default_value_t = 0)]
    pub max_in_flight: usize,

    /// The adaptive in-flight limit: when admitted calls take longer than this
    /// on average while near the limit, the limit becomes throughput x this.
    #[arg(long, env = "CART_ADMISSION_TARGET_LATENCY", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub admission_target_latency: Duration,

    /// Watch streams per tenant per replica; past it RESOURCE_EXHAUSTED (TOO_MANY_WATCHERS).
    #[arg(long, env = "CART_MAX_WATCHERS_PER_TENANT", default_value_t = 10_000)]
    pub max_watchers_per_tenant: usize,

    /// `tenant:secret` pairs for signing callbacks (`whsec_<base64>` or plain text).
    #[arg(long, env = "CART_CALLBACK_SECRETS", value_parser = parse_pairs, hide_env_values = true)]
    pub callback_secrets: Option<Pairs>,

    /// Time allowed for one callback POST.
    #[arg(long, env = "CART_CALLBACK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub callback_timeout: Duration,

    /// Pauses before each callback retry, comma-separated; then it gives up.
    #[arg(long, env = "CART_CALLBACK_BACKOFF", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = parse_backoff)]
    pub callback_backoff: Backoff,

    /// Callback POSTs under way at once per replica.
    #[arg(long, env = "CART_CALLBACK_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_concurrency: u32,

    /// Of those, to one endpoint (host:port), so a slow receiver takes only its share.
    #[arg(long, env = "CART_CALLBACK_ENDPOINT_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_endpoint_concurrency: u32,

    /// Of those, for one tenant.
    #[arg(long, env = "CART_CALLBACK_TENANT_CONCURRENCY", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_tenant_concurrency: u32,

    /// Hosts callback URLs may name, comma-separated; unset allows any.
    #[arg(long, env = "CART_CALLBACK_HOSTS", value_delimiter = ',')]
    pub callback_hosts: Option<Vec<String>>,

    /// Idle life of an ACTIVE cart (`10s`, `15m`, `30d`).
    #[arg(long, env = "CART_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// Life of a cart awaiting the customer.
    #[arg(long, env = "CART_CHECKOUT_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub checkout_timeout: Duration,

    /// Currency of a cart created without one.
    #[arg(long, env = "CART_DEFAULT_CURRENCY", default_value = "USD", value_parser = parse_currency)]
    pub default_currency: Currency,

    /// How often each replica expires and deletes what is due.
    #[arg(long, env = "CART_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// History kept in the event log; older events are deleted (the carts stay).
    #[arg(long, env = "CART_EVENT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub event_retention: Duration,

    /// Life of a cart after its last change once it is in a final status.
    #[arg(long, env = "CART_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// Longest life of one watch stream; the client then resumes from its last version or sequence.
    #[arg(long, env = "CART_WATCH_MAX_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration)]
    pub watch_max_lifetime: Duration,

    /// PEM certificate chain: with --tls-key, gRPC is served over TLS only.
    #[arg(long, env = "CART_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CART_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Largest Postgres connection pool.
    #[arg(long, env = "CART_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// MiB of carts (by their encoded size) each replica remembers, so that
    /// a change skips reading its cart and a read skips its lines; 0: none.
    #[arg(long, env = "CART_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u64,

    /// Bound on waiting for a Postgres connection; past it calls answer UNAVAILABLE.
    #[arg(long, env = "CART_DB_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,

    /// Log format.
    #[arg(long, env = "CART_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC collector to export traces to (`http://collector:4317`); unset exports nothing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "cart-service")]
    pub otel_service_name: String,
}

/// `name:value` pairs whose values are secrets: Debug never shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

impl fmt::Debug for Pairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}:***")))
            .finish()
    }
}

fn parse_pairs(s: &str) -> Result<Pairs, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| "expected tenant:value pairs separated by commas".to_string())?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err("tenant and value must both be non-empty".into());
        }
        if out.iter().any(|(_, v)| v == value) {
            return Err(format!("the same key is given twice (tenant {name})"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(Pairs(out))
}

/// Retry pauses of callback delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

fn parse_backoff(s: &str) -> Result<Backoff, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| humantime::parse_duration(p).map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Backoff)
}

fn parse_currency(s: &str) -> Result<Currency, String> {
    Currency::parse(s).ok_or_else(|| format!("{s:?} is not an ISO 4217 currency with a minor unit"))
}

impl Config {
    /// Defaults for everything, as with no flags and no environment.
    pub fn defaults() -> Config {
        Config::parse_from(["cart-service"])
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("database", &self.database_url.as_ref().map(|_| "set"))
            .field("api_keys", &self.api_keys)
            .field("ttl", &self.ttl)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("default_currency", &self.default_currency)
            .field("db_pool_size", &self.db_pool_size)
            .field("cache_mib", &self.cache_mib)
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_hide_secrets() {
        let p = parse_pairs("shop-a:key1, shop-b:key2").unwrap();
        assert_eq!(p.0[1], ("shop-b".into(), "key2".into()));
        assert!(!format!("{p:?}").contains("key1"));
        assert!(parse_pairs("nocolon").is_err());
        assert!(parse_pairs("a:k,b:k").is_err());
    }

    #[test]
    fn durations_use_humantime() {
        let c = Config::parse_from(["x", "--ttl", "10s", "--checkout-timeout", "15m"]);
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert_eq!(c.checkout_timeout, Duration::from_secs(900));
        assert_eq!(Config::defaults().ttl, Duration::from_secs(30 * 86_400));
        let b = Config::defaults().callback_backoff.0;
        assert_eq!(
            (b.len(), b[0], b[6]),
            (7, Duration::from_secs(5), Duration::from_secs(36_000))
        );
    }

    #[test]
    fn the_operations_port_defaults_to_9090() {
        assert_eq!(Config::defaults().metrics_addr.port(), 9090);
        let c = Config::parse_from(["x", "--metrics-addr", "127.0.0.1:0"]);
        assert_eq!(c.metrics_addr.port(), 0);
    }
}
