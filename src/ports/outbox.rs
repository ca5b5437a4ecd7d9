//! The callback outbox port: deliveries written with the change that calls
//! for them (`Write::callback`), claimed and recorded by the callback worker.
//!
//! Contract of every [`Outbox`]:
//! - a claim leases each delivery to one caller until `lease_until`: no
//!   other claim returns it before the lease ends or its outcome is recorded;
//! - only pending deliveries due now are claimed, and each claim counts an
//!   attempt;
//! - recording an outcome ends the lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{CartError, CartId, TenantId};

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims up to `limit` callbacks due now for one attempt, leased to
    /// the caller until `lease_until`. Counts the attempt.
    async fn claim_callbacks(
        &self,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, CartError>;

    /// Records how an attempt went and ends the lease.
    async fn record_callback(&self, id: Uuid, outcome: &Outcome) -> Result<(), CartError>;

    /// The callbacks of one cart, oldest first.
    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError>;
}

/// A callback claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Also the `webhook-id`: the same on every attempt.
    pub id: Uuid,
    pub tenant: TenantId,
    pub url: String,
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
