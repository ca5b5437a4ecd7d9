//! The event log port: what watchers read.
//!
//! Contract of every [`EventLog`]:
//! - each change of a cart has exactly one event, written atomically with
//!   the change; a cart's events have versions 1, 2, 3... with no gap;
//! - sequences increase with every event (across tenants); they may commit
//!   out of order, so readers never pass the feed's head (see `crate::feed`);
//! - a tenant sees only its own events;
//! - retention (`crate::ports::retention`) deletes the oldest events in
//!   sequence order, except each cart's current event: the *compaction
//!   point* is the sequence up to which every other event is gone (0
//!   before any sweep). A read whose resume point is below what is held fails
//!   with `CartError::EventsCompacted`, judged by [`check_sequence`] and
//!   [`check_version`] against what the read itself saw, so a sweep
//!   between a check and a read can never skip events silently.

use async_trait::async_trait;

use crate::{
    domain::{CartError, CartEvent, CartId, Compacted, TenantId},
    feed::EventFeed,
};

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The tenant's events after sequence `after`, in sequence order, at
    /// most `limit`, and only up to the feed's head: no event at or below
    /// the last one answered can appear later. `EventsCompacted` when
    /// `after` is below the compaction point.
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError>;

    /// One cart's events after `after_version`, in version order, at most
    /// `limit`. `EventsCompacted` when the versions right after
    /// `after_version` are no longer held.
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

/// The one rule for resuming a tenant's stream: `after` must be at or above
/// the compaction point `compacted_through`.
pub fn check_sequence(after: i64, compacted_through: i64) -> Result<(), CartError> {
    if after < compacted_through {
        return Err(CartError::EventsCompacted(Compacted::Through(
            compacted_through,
        )));
    }
    Ok(())
}

/// The one rule for resuming a cart's stream: the version after
/// `after_version` must be held (`oldest_held`: the version of the cart's
/// oldest event still held; the current version's always is). Resuming at
/// or past the current version needs nothing and always works.
pub fn check_version(after_version: i64, oldest_held: i64) -> Result<(), CartError> {
    if after_version + 1 < oldest_held {
        return Err(CartError::EventsCompacted(Compacted::OldestVersion(
            oldest_held,
        )));
    }
    Ok(())
}
