//! The retention port: what the housekeeping use case
//! (`crate::usecase::housekeeping`) deletes so that nothing grows without
//! bound. The use case decides the cutoffs; an adapter only deletes.
//!
//! Contract of every [`Retention`]:
//! - each call deletes at most `limit` rows of its kind and answers how
//!   many; a caller repeats it until it answers fewer than `limit`;
//! - deletion never waits for a writer: what another unit of work holds is
//!   skipped and left to a later sweep;
//! - several replicas may call at once: nothing is deleted twice and
//!   nothing that should stay is deleted.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::CartError;

/// How many events one `purge_events` call may look at per row it may
/// delete: kept (current) events cost nothing, so without this bound a
/// call over many idle carts would answer 0 after looking at `limit`
/// events, and the caller would stop while old events remain behind them.
pub const EVENTS_EXAMINED_PER_ROW: usize = 4;

#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Deletes the oldest events in sequence order, stopping before the
    /// first that occurred after `before`, and raises the compaction point
    /// (see `crate::ports::events`) to the last sequence passed. The event
    /// of each cart's current version stays while the cart does (it is
    /// how the cart stands; WatchCart starts from it), so a cart's oldest
    /// held version is never past its current one. What a store keeps
    /// only to rebuild older versions goes with their events.
    ///
    /// A cart's event kept that way and since superseded goes when the
    /// sweep passes the cart's next event, and counts toward `limit`. A
    /// call looks at most [`EVENTS_EXAMINED_PER_ROW`] x `limit` events, so
    /// a stretch of kept events neither stops the sweep at once nor makes
    /// one call unbounded.
    async fn purge_events(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError>;

    /// Deletes carts in a final status whose last change is at or before
    /// `before`, with everything kept for them (events, lines, idempotency
    /// keys, callback deliveries). Never touches a cart in any other status.
    async fn purge_carts(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError>;

    /// Deletes callback deliveries delivered or failed at or before `before`.
    async fn purge_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError>;
}
