//! What the configuration becomes: the domain policy, retention, the
//! bounds of admission and fair turns, the keys and callback settings.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    auth::Authenticator,
    callbacks::{BreakerSettings, CallbackSettings, Caps},
    config::Config,
    domain::Policy,
    grpc::admission::Bound,
    metrics::Metrics,
    usecase::Keep,
};

fn delta(d: Duration) -> anyhow::Result<chrono::TimeDelta> {
    chrono::TimeDelta::from_std(d).context("duration out of range")
}

pub(super) fn policy(config: &Config) -> anyhow::Result<Policy> {
    Ok(Policy {
        ttl: delta(config.ttl)?,
        checkout_timeout: delta(config.checkout_timeout)?,
    })
}

pub(super) fn keep(config: &Config) -> anyhow::Result<Keep> {
    Ok(Keep {
        events: delta(config.event_retention).context("CART_EVENT_RETENTION")?,
        carts: delta(config.retention).context("CART_RETENTION")?,
    })
}

/// How many calls a replica works on at once: `CART_MAX_IN_FLIGHT`, or
/// adapted to the latency measured (`grpc::admission`), between 4 and 4 x
/// the Postgres pool (the fixed bound of run 1 in BENCHMARKS.md, far past
/// the knee on this machine, where a tenant's writes ran ~300/s at any
/// in-flight count from 8 to 64: more only queued, holding connections that
/// other tenants' calls then waited for).
pub(super) fn in_flight_bound(config: &Config) -> Bound {
    if config.max_in_flight > 0 {
        return Bound::Fixed(config.max_in_flight);
    }
    let target = config.admission_target_latency;
    let max = match config.database_url {
        Some(_) => 4 * config.db_pool_size,
        None => 64 * std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Bound::Adaptive {
        min: 4,
        max,
        target,
    }
}

/// How many admitted calls run at once (the others take turns,
/// `grpc::fair_gate`): one per pooled Postgres connection, since a call
/// past the pool would only wait for one. Fewer would favour reads and a
/// quiet tenant's latency but cost writes their group commits (A/Bs on
/// this 2-core machine against no turns at all, 64 clients: add-items
/// 0.81–0.83x with 8 running, 0.96–1.02x with 16; BENCHMARKS.md), so a
/// tenant gets fewer only while others are active (`grpc::fair_gate`). On
/// the memory store, as many as are admitted.
pub(super) fn running_slots(config: &Config) -> usize {
    match config.database_url {
        Some(_) => config.db_pool_size,
        None => in_flight_bound(config).ceiling(),
    }
}

/// The keys of `CART_API_KEYS` and of `CART_API_KEYS_FILE` (a bad file at
/// start-up is fatal; later, a bad file keeps the previous keys).
pub(super) fn authenticator(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<Arc<Authenticator>> {
    let fixed = config.api_keys.clone().unwrap_or_default().0;
    let file = match &config.api_keys_file {
        Some(path) => Some(crate::auth::reload::load(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let auth = Authenticator::new(fixed, file, metrics.clone()).map_err(anyhow::Error::msg)?;
    if auth.is_open() {
        tracing::warn!(
            "CART_API_KEYS and CART_API_KEYS_FILE are not set: serving without authentication as tenant \"default\""
        );
    }
    Ok(Arc::new(auth))
}

pub(super) fn callback_settings(config: &Config) -> CallbackSettings {
    let secrets: std::collections::HashMap<String, String> = config
        .callback_secrets
        .iter()
        .flat_map(|p| p.0.iter().cloned())
        .collect();
    if secrets.is_empty() {
        tracing::warn!("CART_CALLBACK_SECRETS is not set: callbacks are sent unsigned");
    }
    CallbackSettings {
        secrets,
        timeout: config.callback_timeout,
        backoff: config.callback_backoff.0.clone(),
        caps: Caps {
            total: config.callback_concurrency as usize,
            per_endpoint: config.callback_endpoint_concurrency,
            per_tenant: config.callback_tenant_concurrency,
        },
        breaker: BreakerSettings::default(),
    }
}
