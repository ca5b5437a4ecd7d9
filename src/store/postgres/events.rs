//! Reading the event log (for watchers) and expiring carts.

use super::{
    PgStore, cart_at,
    errors::{PgFailure, pg},
    event_from_row, sql,
    writes::write,
};
use crate::{
    domain::{CartError, CartEvent, CartId, Command, TenantId},
    store::now,
};

pub(super) async fn tenant_events(
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

pub(super) async fn cart_events(
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

pub(super) async fn current_event(
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

pub(super) async fn expire_due(store: &PgStore, limit: usize) -> Result<usize, CartError> {
    let mut client = store.client().await?;
    let now = now();
    let tx = client.transaction().await.map_err(pg)?;
    let stmt = tx.prepare_cached(sql::DUE_CARTS).await.map_err(pg)?;
    let rows = tx
        .query(&stmt, &[&now, &(limit as i64)])
        .await
        .map_err(pg)?;
    let mut expired = 0;
    for row in &rows {
        let tenant = TenantId(row.try_get(0).map_err(pg)?);
        let mut cart = cart_at(row, 1)?;
        // Another sweeper may have expired it between its commit and our lock.
        let Ok(change) = cart.apply(&Command::Expire, 0, now, &store.policy) else {
            continue;
        };
        if write(&tx, &tenant, &cart, change, now, None)
            .await
            .map_err(PgFailure::into_error)?
        {
            expired += 1;
        }
    }
    tx.commit().await.map_err(pg)?;
    if expired > 0 {
        store.committed.poke();
        store.outbox.written();
    }
    Ok(expired)
}
