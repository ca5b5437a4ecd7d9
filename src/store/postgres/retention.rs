//! Retention on Postgres: the purges of `crate::ports::retention` (the
//! event log's reads check what they purged: `events`).
//!
//! The compaction point is one row (`cart_events_compaction`). Event
//! purges move it in batches under `FOR UPDATE SKIP LOCKED`, so one
//! replica at a time moves it and the others go on with their sweep; cart
//! purges share the row, so they never delete the events an event purge is
//! deleting (neither waits for the other, nor for writers). Event purges
//! only pass sequences at or below the feed's head: a sequence can commit
//! out of order (see `crate::feed`), and the point must never move past one
//! that may still appear, or that event would be neither deleted nor kept.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::{PgStore, errors::pg, sql, traced};
use crate::{
    domain::CartError,
    ports::{Retention, retention::EVENTS_EXAMINED_PER_ROW},
};

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

#[async_trait]
impl Retention for PgStore {
    async fn purge_events(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError> {
        let head = self.feed.head();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt(sql::LOCK_COMPACTION, &[])
            .instrument(traced::statement(sql::LOCK_COMPACTION))
            .await
            .map_err(pg)?
        else {
            // Another replica is moving the point; it sweeps meanwhile.
            return Ok(0);
        };
        let through: i64 = row.try_get(0).map_err(pg)?;
        if head <= through {
            return Ok(0);
        }
        let examined = limit.saturating_mul(EVENTS_EXAMINED_PER_ROW) as i64;
        let stmt = tx.prepare_cached(sql::PURGE_EVENTS).await.map_err(pg)?;
        let deleted: i64 = tx
            .query_one(
                &stmt,
                &[&through, &head, &before, &(limit as i64), &examined],
            )
            .instrument(traced::statement(sql::PURGE_EVENTS))
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(count(deleted))
    }

    async fn purge_carts(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::PURGE_CARTS).await.map_err(pg)?;
        let deleted: i64 = client
            .query_one(&stmt, &[&before, &(limit as i64)])
            .instrument(traced::statement(sql::PURGE_CARTS))
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(count(deleted))
    }

    async fn purge_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::PURGE_DELIVERIES)
            .await
            .map_err(pg)?;
        let deleted = client
            .execute(&stmt, &[&before, &(limit as i64)])
            .instrument(traced::statement(sql::PURGE_DELIVERIES))
            .await
            .map_err(pg)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
