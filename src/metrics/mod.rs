//! Prometheus metrics: the registry and the [`Metrics`] handle the rest of
//! the service records through, the per-RPC tower layer (which also logs
//! every call once) and the HTTP server of /metrics, /healthz and /readyz.

pub mod http;
mod labels;
pub mod rpc;

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use labels::{AuthLabels, CallbackLabels, DeletedLabels, RpcLabels, ShedLabels};
pub use labels::{CallbackOutcome, Deleted};

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open (idle or in use).
    pub size: usize,
    /// Idle connections ready to be taken.
    pub available: usize,
    pub max_size: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: HistogramFamily,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_max: Gauge,
    pool_waiting: Gauge,
    watch_streams: Gauge,
    watched_carts: Gauge,
    tasks_alive: Gauge,
    events_delivered: Counter,
    callbacks: Family<CallbackLabels, Counter>,
    callbacks_in_flight: Gauge,
    callbacks_pending: Gauge,
    callbacks_due: Gauge,
    callback_oldest_due: Gauge<f64, std::sync::atomic::AtomicU64>,
    callback_circuits_open: Gauge,
    expiry_sweeps: Counter,
    carts_expired: Counter,
    retention_deleted: Family<DeletedLabels, Counter>,
    authentications: Family<AuthLabels, Counter>,
    key_reloads: Family<AuthLabels, Counter>,
    shed: Family<ShedLabels, Counter>,
}

fn rpc_histogram() -> Histogram {
    // 0.5 ms .. ~12 s: a cached read to a call stuck behind the pool timeout.
    Histogram::new(exponential_buckets(0.0005, 2.5, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cart");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "RPCs handled, by method and code",
            rpcs.clone(),
        );
        let rpc_seconds: HistogramFamily = Family::new_with_constructor(rpc_histogram);
        registry.register_with_unit(
            "rpc_duration",
            "Time from request to the end of the response, by method and code",
            Unit::Seconds,
            rpc_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let pool_size = gauge(
            &mut registry,
            "db_pool_connections",
            "Postgres connections open",
        );
        let pool_available = gauge(
            &mut registry,
            "db_pool_available_connections",
            "Postgres connections open and idle",
        );
        let pool_max = gauge(
            &mut registry,
            "db_pool_max_connections",
            "Largest Postgres connection pool",
        );
        let pool_waiting = gauge(
            &mut registry,
            "db_pool_waiting_calls",
            "Calls waiting for a Postgres connection",
        );
        let watch_streams = gauge(&mut registry, "watch_streams_open", "Watch streams open");
        let watched_carts = gauge(
            &mut registry,
            "watched_carts",
            "Carts with at least one WatchCart stream on this replica",
        );
        let tasks_alive = gauge(
            &mut registry,
            "runtime_tasks_alive",
            "Tokio tasks alive in the server's runtime",
        );
        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Cart events sent to watchers",
            events_delivered.clone(),
        );
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "callback_deliveries",
            "Callback delivery attempts, by outcome and tenant",
            callbacks.clone(),
        );
        let callbacks_in_flight = gauge(
            &mut registry,
            "callback_in_flight",
            "Callback POSTs under way on this replica",
        );
        let callbacks_pending = gauge(
            &mut registry,
            "callback_backlog",
            "Callbacks not yet delivered nor given up (the whole outbox, as this replica last sampled it)",
        );
        let callbacks_due = gauge(
            &mut registry,
            "callback_due",
            "Of the backlog, callbacks due now (being attempted or waiting for a slot)",
        );
        let callback_oldest_due = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "callback_oldest_due_age",
            "How long the oldest due callback has been due (0 when none is)",
            Unit::Seconds,
            callback_oldest_due.clone(),
        );
        let callback_circuits_open = gauge(
            &mut registry,
            "callback_circuits_open",
            "Callback endpoints this replica is backing off as a whole (circuit open)",
        );
        let expiry_sweeps = Counter::default();
        registry.register("expiry_sweeps", "Expiry sweeps run", expiry_sweeps.clone());
        let carts_expired = Counter::default();
        registry.register(
            "carts_expired",
            "Carts expired by sweeps",
            carts_expired.clone(),
        );
        let retention_deleted = Family::<DeletedLabels, Counter>::default();
        registry.register(
            "retention_deleted",
            "Rows deleted by retention sweeps, by kind (events, carts, deliveries, keys)",
            retention_deleted.clone(),
        );
        // Every kind shows from the start, so rates work before the first deletion.
        for kind in Deleted::ALL {
            drop(retention_deleted.get_or_create(&DeletedLabels { kind }));
        }
        let authentications = Family::<AuthLabels, Counter>::default();
        registry.register(
            "authentications",
            "Calls authenticated (once each), by outcome",
            authentications.clone(),
        );
        let key_reloads = Family::<AuthLabels, Counter>::default();
        registry.register(
            "api_key_reloads",
            "Re-reads of CART_API_KEYS_FILE, by outcome (`ok`, or `failed`: previous keys kept)",
            key_reloads.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "shed_calls",
            "Calls refused without being worked on, by tenant and reason",
            shed.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                rpcs,
                rpc_seconds,
                pool_size,
                pool_available,
                pool_max,
                pool_waiting,
                watch_streams,
                watched_carts,
                tasks_alive,
                events_delivered,
                callbacks,
                callbacks_in_flight,
                callbacks_pending,
                callbacks_due,
                callback_oldest_due,
                callback_circuits_open,
                expiry_sweeps,
                carts_expired,
                retention_deleted,
                authentications,
                key_reloads,
                shed,
            }),
        }
    }

    pub(crate) fn rpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            method: method.to_string(),
            code: rpc::code_name(code),
        };
        self.inner.rpcs.get_or_create(&labels).inc();
        self.inner
            .rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// One authentication, ok or failed.
    pub fn authenticated(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner
            .authentications
            .get_or_create(&AuthLabels { outcome })
            .inc();
    }

    /// One re-read of the keys file: taken, or rejected (previous keys kept).
    pub fn keys_reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner
            .key_reloads
            .get_or_create(&AuthLabels { outcome })
            .inc();
    }

    /// A call of `tenant` refused before any work, with ErrorInfo `reason`.
    /// Shed-call series at 0 for these tenants, so that rates start from
    /// the first scrape rather than from the first refusal.
    pub fn shed_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        for tenant in tenants {
            for reason in ["OVERLOADED", "DEADLINE_EXCEEDED", "TOO_MANY_WATCHERS"] {
                let labels = ShedLabels {
                    tenant: tenant.to_string(),
                    reason,
                };
                let _ = self.inner.shed.get_or_create(&labels);
            }
        }
    }

    pub fn shed(&self, tenant: &str, reason: &'static str) {
        let labels = ShedLabels {
            tenant: tenant.to_string(),
            reason,
        };
        self.inner.shed.get_or_create(&labels).inc();
    }

    pub fn watch_stream_opened(&self) {
        self.inner.watch_streams.inc();
    }

    pub fn watch_stream_closed(&self) {
        self.inner.watch_streams.dec();
    }

    pub fn event_delivered(&self) {
        self.inner.events_delivered.inc();
    }

    pub fn callback_delivery(&self, tenant: &str, outcome: CallbackOutcome) {
        let labels = CallbackLabels {
            outcome,
            tenant: tenant.to_string(),
        };
        self.inner.callbacks.get_or_create(&labels).inc();
    }

    /// Makes every outcome of these tenants show from the start, so rates
    /// work before the first failure.
    pub fn callback_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        for tenant in tenants {
            for outcome in CallbackOutcome::ALL {
                let labels = CallbackLabels {
                    outcome,
                    tenant: tenant.to_string(),
                };
                drop(self.inner.callbacks.get_or_create(&labels));
            }
        }
    }

    /// The delivery worker's state: POSTs under way, endpoints backed off.
    pub fn callback_worker(&self, in_flight: usize, circuits_open: usize) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.inner.callbacks_in_flight.set(n(in_flight));
        self.inner.callback_circuits_open.set(n(circuits_open));
    }

    /// A sample of the outbox: pending, due, age of the oldest due.
    pub fn callback_backlog(&self, pending: u64, due: u64, oldest_due_age: Duration) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.inner.callbacks_pending.set(n(pending));
        self.inner.callbacks_due.set(n(due));
        self.inner
            .callback_oldest_due
            .set(oldest_due_age.as_secs_f64());
    }

    /// One sweep ran and expired `expired_count` carts.
    pub fn expiry_sweep(&self, expired_count: u64) {
        self.inner.expiry_sweeps.inc();
        self.inner.carts_expired.inc_by(expired_count);
    }

    /// A retention sweep deleted `count` rows of `kind`.
    pub fn retention_deleted(&self, kind: Deleted, count: u64) {
        self.inner
            .retention_deleted
            .get_or_create(&DeletedLabels { kind })
            .inc_by(count);
    }

    /// The OpenMetrics text of every metric; pool and watch gauges sampled
    /// from `pool` and `watched_carts`, the task count from the runtime.
    pub fn render(&self, pool: Option<PoolUse>, watched_carts: usize) -> String {
        let set = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.inner.watched_carts, watched_carts);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            set(&self.inner.tasks_alive, rt.metrics().num_alive_tasks());
        }
        if let Some(p) = pool {
            set(&self.inner.pool_size, p.size);
            set(&self.inner.pool_available, p.available);
            set(&self.inner.pool_max, p.max_size);
            set(&self.inner.pool_waiting, p.waiting);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_are_counted_by_method_and_code() {
        let m = Metrics::new();
        m.rpc(
            "cart.v1.CartService/GetCart",
            tonic::Code::NotFound,
            Duration::from_millis(3),
        );
        m.expiry_sweep(4);
        m.retention_deleted(Deleted::Events, 7);
        m.callback_tenants(["shop"]);
        m.callback_delivery("shop", CallbackOutcome::Failed);
        let text = m.render(None, 0);
        let labels = r#"{method="cart.v1.CartService/GetCart",code="NOT_FOUND"}"#;
        assert!(
            text.contains(&format!("cart_rpc_requests_total{labels} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("cart_rpc_duration_seconds_count{labels} 1")),
            "{text}"
        );
        assert!(text.contains("cart_carts_expired_total 4"), "{text}");
        assert!(
            text.contains(r#"cart_retention_deleted_total{kind="events"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cart_retention_deleted_total{kind="keys"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cart_callback_deliveries_total{outcome="failed",tenant="shop"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cart_callback_deliveries_total{outcome="delivered",tenant="shop"} 0"#),
            "{text}"
        );
    }
}
