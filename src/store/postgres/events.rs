//! Reading the event log, for watchers.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tracing::Instrument as _;

use super::{PgStore, errors::pg, feed, rows, sql, traced};
use crate::{
    domain::{CartError, CartEvent, CartId, TenantId},
    feed::EventFeed,
    ports::{
        EventLog,
        events::{check_sequence, check_version},
    },
};

#[async_trait]
impl EventLog for PgStore {
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        // Never past the head: a smaller sequence may still commit.
        let head = self.feed.head();
        if head <= after {
            return Ok(Vec::new());
        }
        let params: [&(dyn ToSql + Sync); 4] = [&tenant.as_str(), &after, &head, &(limit as i64)];
        let found = self.rows(sql::TENANT_EVENTS, &params).await?;
        check_sequence(after, rows::bound(&found)?.unwrap_or(0))?;
        rows::events(&found)
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let params: [&(dyn ToSql + Sync); 4] =
            [&tenant.as_str(), &cart, &after_version, &(limit as i64)];
        let found = self.rows(sql::CART_EVENTS, &params).await?;
        if let Some(oldest) = rows::bound(&found)? {
            check_version(after_version, oldest)?;
        }
        rows::events(&found)
    }

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        let params: [&(dyn ToSql + Sync); 2] = [&tenant.as_str(), &cart];
        let mut events = self.events(sql::CURRENT_EVENT, &params).await?;
        events.pop().ok_or(CartError::CartNotFound)
    }

    async fn head_now(&self) -> Result<i64, CartError> {
        let client = self.client().await?;
        feed::head_now(&client).await
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }
}

impl PgStore {
    /// Runs one of the event queries of `sql`.
    async fn events(
        &self,
        query: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<CartEvent>, CartError> {
        rows::events(&self.rows(query, params).await?)
    }

    async fn rows(
        &self,
        query: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(query).await.map_err(pg)?;
        client
            .query(&stmt, params)
            .instrument(traced::statement(query))
            .await
            .map_err(pg)
    }
}
