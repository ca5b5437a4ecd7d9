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
pub mod outbox;
pub mod postgres;

pub use outbox::{Backlog, Budget, Claim, endpoint_of};

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{
        CartError, CartEvent, CartStatus, IdempotencyKey, MergeStrategy, NewCart, TenantId,
        cart::{Cart, CartId},
        command::Command,
    },
    watch::EventFeed,
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

impl CartPage {
    /// A page from up to `page_size + 1` carts in list order: the extra one
    /// only says that more follow.
    pub fn from_overfetch(mut carts: Vec<Cart>, page_size: usize) -> CartPage {
        let more = carts.len() > page_size;
        carts.truncate(page_size);
        let next = carts.last().filter(|_| more).map(|c| PageCursor {
            created_at: c.created_at,
            id: c.id,
        });
        CartPage { carts, next }
    }
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

    /// The tenant's events after sequence `after`, in sequence order, at
    /// most `limit`, and only up to the feed's head: no event at or below
    /// the last one answered can appear later.
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError>;

    /// One cart's events after `after_version`, in version order.
    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError>;

    /// The event of the cart's current version: the cart as it stands.
    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError>;

    /// Expires up to `limit` carts past their expiry (ACTIVE past the TTL,
    /// AWAITING_CUSTOMER past the checkout timeout), each as a normal
    /// versioned change; safe to run on several replicas at once. Answers
    /// how many it expired.
    async fn expire_due(&self, limit: usize) -> Result<usize, CartError>;

    /// Forgets up to `limit` idempotency keys older than the window, so
    /// the table does not grow without end. Answers how many.
    async fn forget_old_keys(&self, limit: usize) -> Result<usize, CartError>;

    /// The live feed of this store's events.
    fn feed(&self) -> &EventFeed;

    /// Connection pool use, for metrics; None when the store has no pool.
    fn pool_status(&self) -> Option<PoolUse> {
        None
    }

    // The callback outbox (kept together: one port's worth).

    /// Claims due callbacks for one attempt each, oldest due first, within
    /// the claim's limits (in all, per endpoint, per tenant), leased to the
    /// caller until `lease_until`; another worker claims none of them
    /// before the lease ends. Counts the attempt.
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

    /// Woken after a change that may have written a callback commits,
    /// through this replica or (Postgres) any other: delivery workers wait
    /// on it instead of polling.
    fn callbacks_written(&self) -> Arc<Notify>;

    /// A sequence that every event committed before this call is at or
    /// below, and past which nothing at or below can appear: where a
    /// watcher "from now on" starts.
    async fn head_now(&self) -> Result<i64, CartError>;
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

/// An outcome as the columns of its delivery row.
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
