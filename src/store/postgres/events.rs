//! Reading the event log, for watchers.

use async_trait::async_trait;

use super::{PgStore, errors::pg, event_from_row, feed, sql};
use crate::{
    domain::{CartError, CartEvent, CartId, TenantId},
    feed::EventFeed,
    ports::EventLog,
};

#[async_trait]
impl EventLog for PgStore {
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        tenant_events(self, tenant, after, limit).await
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        cart_events(self, tenant, cart, after_version, limit).await
    }

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        current_event(self, tenant, cart).await
    }

    async fn head_now(&self) -> Result<i64, CartError> {
        let client = self.client().await?;
        feed::head_now(&client).await
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }
}

async fn tenant_events(
    store: &PgStore,
    tenant: &TenantId,
    after: i64,
    limit: usize,
) -> Result<Vec<CartEvent>, CartError> {
    let head = store.feed.head();
    if head <= after {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::TENANT_EVENTS)
        .await
        .map_err(pg)?;
    let rows = client
        .query(&stmt, &[&tenant.as_str(), &after, &head, &(limit as i64)])
        .await
        .map_err(pg)?;
    rows.iter().map(event_from_row).collect()
}

async fn cart_events(
    store: &PgStore,
    tenant: &TenantId,
    cart: CartId,
    after_version: i64,
    limit: usize,
) -> Result<Vec<CartEvent>, CartError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(sql::CART_EVENTS).await.map_err(pg)?;
    let rows = client
        .query(
            &stmt,
            &[&tenant.as_str(), &cart, &after_version, &(limit as i64)],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(event_from_row).collect()
}

async fn current_event(
    store: &PgStore,
    tenant: &TenantId,
    cart: CartId,
) -> Result<CartEvent, CartError> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::CURRENT_EVENT)
        .await
        .map_err(pg)?;
    let row = client
        .query_opt(&stmt, &[&tenant.as_str(), &cart])
        .await
        .map_err(pg)?;
    event_from_row(&row.ok_or(CartError::CartNotFound)?)
}
