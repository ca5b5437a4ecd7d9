//! The sweeper: moves carts past their expiry to EXPIRED as normal
//! versioned changes, then deletes what retention says is due (old events,
//! old final carts, finished callback deliveries, idempotency keys past
//! their window). Every replica runs one; concurrent sweeps skip each
//! other's rows (Postgres: `FOR UPDATE SKIP LOCKED` batches).

use std::time::Duration;

use crate::{
    metrics::{Deleted, Metrics},
    usecase::{Carts, Housekeeping, Swept},
};

/// Carts expired per store call.
const BATCH: usize = 100;

pub async fn sweep_forever(
    carts: Carts,
    housekeeping: Housekeeping,
    every: Duration,
    metrics: Metrics,
) {
    loop {
        tokio::time::sleep(every).await;
        expire(&carts, &metrics).await;
        let mut swept = Swept::default();
        let failed = housekeeping.sweep(&mut swept).await;
        for (kind, n) in [
            (Deleted::Events, swept.events),
            (Deleted::Carts, swept.carts),
            (Deleted::Deliveries, swept.deliveries),
            (Deleted::Keys, swept.keys),
        ] {
            metrics.retention_deleted(kind, n as u64);
        }
        if swept.any() {
            tracing::info!(
                events = swept.events,
                carts = swept.carts,
                deliveries = swept.deliveries,
                keys = swept.keys,
                "retention sweep deleted rows"
            );
        }
        if let Err(e) = failed {
            tracing::warn!(error = %e, "retention sweep failed");
        }
    }
}

async fn expire(carts: &Carts, metrics: &Metrics) {
    let mut total = 0;
    loop {
        match carts.expire_due(BATCH).await {
            Ok(n) => {
                total += n;
                if n < BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep failed");
                break;
            }
        }
    }
    metrics.expiry_sweep(total as u64);
    if total > 0 {
        tracing::info!(expired = total, "expired carts");
    }
}
