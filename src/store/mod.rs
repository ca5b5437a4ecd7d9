//! The port through which the service keeps carts, and its two adapters.
//!
//! Contract of every [`CartStore`]:
//! - every call is atomic: it applies all of its change or none of it;
//! - a change bumps the cart's version by exactly one and appends one event
//!   (cart id, version, type, status, previous status, time, the cart as it
//!   then stood) in the same atomic step;
//! - concurrent changes to one cart are serialised: none is lost;
//! - an idempotency key is recorded with the change it belongs to; a key
//!   seen in the last 24 hours answers the first result (same fingerprint)
//!   or `IdempotencyKeyReused` (another fingerprint) and applies nothing;
//! - carts of one tenant are invisible to every other tenant
//!   (`CartNotFound`, never a hint that the id exists).

pub mod memory;
pub mod postgres;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{
    CartError, CartStatus, IdempotencyKey, MergeStrategy, NewCart, TenantId,
    cart::{Cart, CartId},
    command::Command,
};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: TimeDelta = TimeDelta::hours(24);

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Empty: every customer.
    pub customer_id: String,
    /// Empty: every status.
    pub statuses: Vec<CartStatus>,
    pub page_size: usize,
    /// Carts strictly older (in list order) than this one.
    pub after: Option<PageCursor>,
}

/// A position in the newest-first list of a tenant's carts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub created_at: DateTime<Utc>,
    pub id: CartId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CartPage {
    pub carts: Vec<Cart>,
    /// Set when more carts may follow.
    pub next: Option<PageCursor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeRequest {
    pub source: CartId,
    pub target: Option<CartId>,
    pub customer_id: String,
    pub strategy: MergeStrategy,
    pub expected_version: i64,
}

#[async_trait]
pub trait CartStore: Send + Sync + 'static {
    /// Creates a cart. A `reference` the tenant already used answers that
    /// cart when `fingerprint` (of the create request) matches, and
    /// `ReferenceTaken` when it does not.
    async fn create(
        &self,
        tenant: &TenantId,
        new: NewCart,
        fingerprint: [u8; 32],
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError>;

    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError>;

    /// The tenant's carts, newest first.
    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<CartPage, CartError>;

    /// Applies one command to one cart and answers the cart as it then stands.
    async fn apply(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError>;

    /// Merges two carts in one atomic step; answers the cart the strategy keeps.
    async fn merge(
        &self,
        tenant: &TenantId,
        req: &MergeRequest,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError>;

    /// Ok when the store can serve.
    async fn check_health(&self) -> Result<(), CartError>;

    /// Connection pool use, for metrics; None when the store has no pool.
    fn pool_status(&self) -> Option<PoolUse> {
        None
    }
}

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

/// What a remembered idempotency key answers for `key`.
pub(crate) fn replay(
    stored_fingerprint: &[u8],
    response: Cart,
    key: &IdempotencyKey,
) -> Result<Cart, CartError> {
    if stored_fingerprint == key.fingerprint {
        Ok(response)
    } else {
        Err(CartError::IdempotencyKeyReused)
    }
}

/// The time of a change, at microsecond precision as timestamptz keeps it,
/// so that stored documents, columns and page cursors agree exactly.
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
