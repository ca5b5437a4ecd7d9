//! The callback outbox: claiming due deliveries, recording attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgStore, errors::pg, sql};
use crate::{
    domain::{CartError, CartId, TenantId, now},
    ports::{Delivery, DeliveryState, Outbox, Outcome},
};

#[async_trait]
impl Outbox for PgStore {
    async fn claim_callbacks(
        &self,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, CartError> {
        claim(self, limit, lease_until).await
    }

    async fn record_callback(&self, id: Uuid, outcome: &Outcome) -> Result<(), CartError> {
        record(self, id, outcome).await
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        deliveries_of(self, tenant, cart).await
    }
}

pub(super) async fn claim(
    store: &PgStore,
    limit: usize,
    lease_until: DateTime<Utc>,
) -> Result<Vec<Delivery>, CartError> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::CLAIM_CALLBACKS)
        .await
        .map_err(pg)?;
    let rows = client
        .query(&stmt, &[&now(), &lease_until, &(limit as i64)])
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                id: r.try_get(0).map_err(pg)?,
                tenant: TenantId(r.try_get(1).map_err(pg)?),
                url: r.try_get(2).map_err(pg)?,
                body: r.try_get(3).map_err(pg)?,
                attempts: r.try_get(4).map_err(pg)?,
            })
        })
        .collect()
}

pub(super) async fn record(store: &PgStore, id: Uuid, outcome: &Outcome) -> Result<(), CartError> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::RECORD_CALLBACK)
        .await
        .map_err(pg)?;
    let row = outcome.row(now());
    let status = row.last_status.map(i32::from);
    client
        .execute(
            &stmt,
            &[
                &id,
                &row.state,
                &row.next_attempt_at,
                &status,
                &row.last_error,
                &row.delivered_at,
            ],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

pub(super) async fn deliveries_of(
    store: &PgStore,
    tenant: &TenantId,
    cart: CartId,
) -> Result<Vec<DeliveryState>, CartError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(sql::CALLBACKS_OF).await.map_err(pg)?;
    let rows = client
        .query(&stmt, &[&tenant.as_str(), &cart])
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|r| {
            let status: Option<i32> = r.try_get(5).map_err(pg)?;
            Ok(DeliveryState {
                id: r.try_get(0).map_err(pg)?,
                version: r.try_get(1).map_err(pg)?,
                url: r.try_get(2).map_err(pg)?,
                state: r.try_get(3).map_err(pg)?,
                attempts: r.try_get(4).map_err(pg)?,
                last_status: status.and_then(|s| u16::try_from(s).ok()),
                last_error: r.try_get(6).map_err(pg)?,
                next_attempt_at: r.try_get(7).map_err(pg)?,
                delivered_at: r.try_get(8).map_err(pg)?,
            })
        })
        .collect()
}
