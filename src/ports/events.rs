//! The event log port: what watchers read.
//!
//! Contract of every [`EventLog`]:
//! - each change of a cart has exactly one event, written atomically with
//!   the change; a cart's events have versions 1, 2, 3... with no gap;
//! - sequences increase with every event (across tenants); they may commit
//!   out of order, so readers never pass the feed's head (see `crate::feed`);
//! - a tenant sees only its own events.

use async_trait::async_trait;

use crate::{
    domain::{CartError, CartEvent, CartId, TenantId},
    feed::EventFeed,
};

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The tenant's events after sequence `after`, in sequence order, at
    /// most `limit`, and only up to the feed's head: no event at or below
    /// the last one answered can appear later.
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError>;

    /// One cart's events after `after_version`, in version order, at most `limit`.
    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError>;

    /// The event of the cart's current version: the cart as it stands.
    /// `CartNotFound` for a cart the tenant does not have.
    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError>;

    /// A sequence that every event committed before this call is at or
    /// below, and past which nothing at or below can appear: where a
    /// watcher "from now on" starts.
    async fn head_now(&self) -> Result<i64, CartError>;

    /// The live feed this store publishes its events into.
    fn feed(&self) -> &EventFeed;
}
