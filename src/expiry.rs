//! The expiry sweeper: moves carts past their expiry to EXPIRED as normal
//! versioned changes, and forgets idempotency keys past their window.
//! Every replica runs one; concurrent sweeps skip each other's carts
//! (Postgres: `FOR UPDATE SKIP LOCKED` batches).

use std::time::Duration;

use crate::{metrics::Metrics, usecase::Carts};

/// Carts expired per store call.
const BATCH: usize = 100;

pub async fn sweep_forever(carts: Carts, every: Duration, metrics: Metrics) {
    loop {
        tokio::time::sleep(every).await;
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
        match carts.forget_old_keys(BATCH * 10).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(forgotten = n, "forgot idempotency keys past the window"),
            Err(e) => tracing::warn!(error = %e, "forgetting old idempotency keys failed"),
        }
        if total > 0 {
            tracing::info!(expired = total, "expired carts");
        }
    }
}
