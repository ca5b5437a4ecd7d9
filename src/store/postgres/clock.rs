//! Keeps the service's clock (`crate::domain::clock`) on the database's:
//! every replica then stamps and compares times with the same clock, even
//! when the machines' clocks disagree. The offset is measured at connect
//! (before the service serves) and again every [`EVERY`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::errors::{pg, pool};
use crate::domain::{CartError, clock};

const EVERY: Duration = Duration::from_secs(10);

/// Measures how far the database's clock is ahead of this machine's (half
/// a round trip of uncertainty) and follows it.
pub(super) async fn sync(db: &Pool) -> Result<(), CartError> {
    let client = db.get().await.map_err(pool)?;
    let stmt = client
        .prepare_cached("SELECT clock_timestamp()")
        .await
        .map_err(pg)?;
    let sent = Utc::now();
    let row = client.query_one(&stmt, &[]).await.map_err(pg)?;
    let received = Utc::now();
    let theirs: DateTime<Utc> = row.try_get(0).map_err(pg)?;
    let ours = sent + (received - sent) / 2;
    clock::follow(theirs - ours);
    Ok(())
}

/// Re-measures forever (a clock drifts, or is set).
pub(super) fn keep_synced(db: Pool) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            if let Err(e) = sync(&db).await {
                tracing::debug!(error = %e, "measuring the database clock failed; keeping the last offset");
            }
        }
    });
}
