//! Housekeeping: what is deleted so that nothing grows without bound (the
//! contract's Retention), and the one place its cutoffs are decided. The
//! sweeper (`crate::expiry`) runs a sweep on every replica; the store only
//! deletes what it is told (`crate::ports::Retention`).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::IDEMPOTENCY_WINDOW;
use crate::{
    domain::{CartError, now},
    ports::{CartRepository, Retention},
};

/// Rows deleted per store call: small, so that no batch holds anything long.
pub const BATCH: usize = 500;
/// Store calls per kind per sweep: a replica with a backlog deletes up to
/// this many batches, then leaves the rest to its next sweep (and to the
/// other replicas) instead of spinning.
pub const MAX_BATCHES: usize = 20;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// History in the event log, and finished callback deliveries.
    pub events: TimeDelta,
    /// A cart in a final status after its last change.
    pub carts: TimeDelta,
}

/// Rows one sweep deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub events: usize,
    pub carts: usize,
    pub deliveries: usize,
    /// Idempotency keys past their window.
    pub keys: usize,
}

impl Swept {
    pub fn any(&self) -> bool {
        *self != Swept::default()
    }
}

#[derive(Clone)]
pub struct Housekeeping {
    retention: Arc<dyn Retention>,
    repo: Arc<dyn CartRepository>,
    keep: Keep,
}

impl Housekeeping {
    pub fn new(retention: Arc<dyn Retention>, repo: Arc<dyn CartRepository>, keep: Keep) -> Self {
        Housekeeping {
            retention,
            repo,
            keep,
        }
    }

    /// One sweep: old final carts (with everything kept for them), then
    /// old events, finished deliveries and keys past their window, each in
    /// at most [`MAX_BATCHES`] batches of [`BATCH`]. Counts into `swept`
    /// as it goes, so that what was deleted before a failure is known.
    /// A kind that fails does not hold the others back; an unreachable
    /// store ends the sweep at once (every kind would wait for it in turn).
    /// Answers the first failure.
    pub async fn sweep(&self, swept: &mut Swept) -> Result<(), CartError> {
        let now = now();
        let mut failed = Failed::default();
        // Carts first: their events then need no pass of their own.
        if let Some(before) = cutoff(now, self.keep.carts) {
            let r = batches(&mut swept.carts, || {
                self.retention.purge_carts(before, BATCH)
            });
            failed.note(r.await)?;
        }
        if let Some(before) = cutoff(now, self.keep.events) {
            let r = batches(&mut swept.events, || {
                self.retention.purge_events(before, BATCH)
            });
            failed.note(r.await)?;
            let r = batches(&mut swept.deliveries, || {
                self.retention.purge_deliveries(before, BATCH)
            });
            failed.note(r.await)?;
        }
        if let Some(before) = cutoff(now, IDEMPOTENCY_WINDOW) {
            let r = batches(&mut swept.keys, || {
                self.repo.forget_keys_before(before, BATCH)
            });
            failed.note(r.await)?;
        }
        failed.0.map_or(Ok(()), Err)
    }

    /// Forgets up to `limit` idempotency keys past their window, so they
    /// do not pile up. Answers how many.
    pub async fn forget_old_keys(&self, limit: usize) -> Result<usize, CartError> {
        self.repo
            .forget_keys_before(now() - IDEMPOTENCY_WINDOW, limit)
            .await
    }
}

/// What was last changed at or before this is past `keep`. None when
/// nothing can be that old (a retention of "forever": nothing this service
/// stores predates 1970), so that a huge setting neither overflows nor
/// sends Postgres a timestamp out of its range.
fn cutoff(now: DateTime<Utc>, keep: TimeDelta) -> Option<DateTime<Utc>> {
    now.checked_sub_signed(keep)
        .filter(|at| *at > DateTime::UNIX_EPOCH)
}

/// The first failure of a sweep.
#[derive(Default)]
struct Failed(Option<CartError>);

impl Failed {
    /// Keeps the first failure; an unreachable store is passed on at once.
    fn note(&mut self, r: Result<(), CartError>) -> Result<(), CartError> {
        match r {
            Err(e @ CartError::Unavailable(_)) => Err(e),
            Err(e) => {
                self.0.get_or_insert(e);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

/// Runs `batch` until it answers fewer than [`BATCH`] rows (the port's
/// contract) or [`MAX_BATCHES`] ran, adding what it deleted to `total`.
async fn batches<F, Fut>(total: &mut usize, batch: F) -> Result<(), CartError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<usize, CartError>>,
{
    for _ in 0..MAX_BATCHES {
        let n = batch().await?;
        *total += n;
        if n < BATCH {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_of_forever_deletes_nothing() {
        let now = now();
        assert_eq!(
            cutoff(now, TimeDelta::days(7)),
            Some(now - TimeDelta::days(7))
        );
        assert_eq!(cutoff(now, TimeDelta::days(365 * 100)), None);
        assert_eq!(cutoff(now, TimeDelta::MAX), None);
    }
}
