//! The callback outbox port: deliveries written with the change that calls
//! for them (`Write::callback`), claimed and recorded by the callback worker.
//!
//! Contract of every [`Outbox`]:
//! - a claim takes at most its limits (in all, per endpoint, per tenant);
//! - a claim leases each delivery to one caller until `lease_until`: no
//!   other claim returns it before the lease ends or its outcome is recorded;
//! - only pending deliveries due now are claimed, and each claim counts an
//!   attempt;
//! - recording an outcome ends the lease.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{CartError, CartId, TenantId};

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims due callbacks for one attempt each, oldest due first, within
    /// the claim's limits (in all, per endpoint, per tenant), leased to the
    /// caller until `lease_until`. Counts the attempt.
    async fn claim_callbacks(&self, claim: &Claim) -> Result<Vec<Delivery>, CartError>;

    /// Records how attempts went and ends their leases, in one step.
    async fn record_callbacks(&self, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError>;

    /// The callbacks of one cart, oldest first.
    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError>;

    /// The outbox's size and the age of its oldest due callback.
    async fn callback_backlog(&self) -> Result<Backlog, CartError>;

    /// Woken after a change that wrote a callback commits, through this
    /// replica or (Postgres) any other: delivery workers wait on it instead
    /// of polling.
    fn callbacks_written(&self) -> Arc<Notify>;
}

/// A callback claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Also the `webhook-id`: the same on every attempt.
    pub id: Uuid,
    pub tenant: TenantId,
    pub url: String,
    /// The URL's [`endpoint_of`].
    pub endpoint: String,
    /// The JSON body, exactly as it is sent and signed.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    Retry {
        at: DateTime<Utc>,
        status: Option<u16>,
        error: String,
    },
    GaveUp {
        status: Option<u16>,
        error: String,
    },
}

/// A callback as it stands, for operators and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryState {
    pub id: Uuid,
    pub version: i64,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An outcome as the fields of its stored delivery.
pub struct OutcomeRow<'a> {
    pub state: &'static str,
    /// None keeps the current one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Outcome {
    pub fn row(&self, now: DateTime<Utc>) -> OutcomeRow<'_> {
        let (state, next_attempt_at, last_status, last_error, delivered_at) = match self {
            Outcome::Delivered { status } => ("delivered", None, Some(*status), None, Some(now)),
            Outcome::Retry { at, status, error } => {
                ("pending", Some(*at), *status, Some(error.as_str()), None)
            }
            Outcome::GaveUp { status, error } => {
                ("failed", None, *status, Some(error.as_str()), None)
            }
        };
        OutcomeRow {
            state,
            next_attempt_at,
            last_status,
            last_error,
            delivered_at,
        }
    }
}

/// A claim of due callbacks for immediate attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// At most this many rows in all.
    pub limit: usize,
    /// The rows are the caller's until then.
    pub lease_until: DateTime<Utc>,
    /// At most this many rows per endpoint (see [`endpoint_of`]).
    pub endpoints: Budget,
    /// At most this many rows per tenant.
    pub tenants: Budget,
}

/// How many rows one claim may take per key (endpoint or tenant).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budget {
    /// For every key not in `except`.
    pub default: u32,
    /// Keys with a budget of their own (0: none of their rows).
    pub except: Vec<(String, u32)>,
}

impl Budget {
    pub fn of(&self, key: &str) -> u32 {
        self.except
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.default, |(_, n)| *n)
    }

    /// Keys whose rows are not to be claimed at all.
    pub fn closed(&self) -> Vec<&str> {
        self.except
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The (key, budget) pairs as two parallel arrays, for SQL.
    pub fn columns(&self) -> (Vec<&str>, Vec<i64>) {
        self.except
            .iter()
            .map(|(k, n)| (k.as_str(), i64::from(*n)))
            .unzip()
    }
}

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backlog {
    /// Callbacks not yet delivered nor given up (due or waiting to retry).
    pub pending: u64,
    /// Of those, due now (including those being attempted).
    pub due: u64,
    /// When the oldest due one became due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// The endpoint of a callback URL: its authority (`host[:port]`), lower
/// case. Concurrency caps and circuit breakers are per endpoint. The
/// Postgres column `callback_deliveries.endpoint` computes the same.
pub fn endpoint_of(url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return String::new();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_authorities() {
        assert_eq!(
            endpoint_of("https://Pay.Example:8443/ok?x=1"),
            "pay.example:8443"
        );
        assert_eq!(endpoint_of("http://127.0.0.1:9/a/b"), "127.0.0.1:9");
        assert_eq!(endpoint_of("http://h.example#f"), "h.example");
        assert_eq!(endpoint_of("nonsense"), "");
    }

    #[test]
    fn budgets_fall_back_to_the_default() {
        let b = Budget {
            default: 4,
            except: vec![("a".into(), 0), ("b".into(), 2)],
        };
        assert_eq!((b.of("a"), b.of("b"), b.of("c")), (0, 2, 4));
        assert_eq!(b.closed(), ["a"]);
    }
}
