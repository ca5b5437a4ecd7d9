//! The callback outbox: claiming due deliveries within the worker's
//! limits, recording attempts, the backlog, and the wake-ups that tell
//! workers (of this replica at once, of the others by NOTIFY after commit)
//! that new rows may be due.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{PgStore, channel, errors::pg, sql};
use crate::{
    domain::{CartError, CartId, TenantId, now},
    ports::{Backlog, Claim, Delivery, DeliveryState, Outbox, Outcome},
};

#[async_trait]
impl Outbox for PgStore {
    async fn claim_callbacks(&self, claim: &Claim) -> Result<Vec<Delivery>, CartError> {
        self::claim(self, claim).await
    }

    async fn record_callbacks(&self, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError> {
        record(self, outcomes).await
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        deliveries_of(self, tenant, cart).await
    }

    async fn callback_backlog(&self) -> Result<Backlog, CartError> {
        backlog(self).await
    }

    fn callbacks_written(&self) -> Arc<Notify> {
        self.outbox.worker()
    }
}

/// Candidates ranked per claim, per row asked for: room for rows over
/// their key's budget. A key that fills its budget is left out of the
/// worker's next claim, so its rows cannot hide the others for long.
const CANDIDATES_PER_ROW: usize = 2;

/// Who hears of committed outbox rows.
#[derive(Clone)]
pub(super) struct Wake {
    /// This replica's delivery worker.
    worker: Arc<Notify>,
    /// The task that NOTIFYs the other replicas.
    notifier: Arc<Notify>,
}

impl Wake {
    /// Starts the notifier and the listener of this replica.
    pub fn start(cfg: &tokio_postgres::Config) -> Wake {
        let wake = Wake {
            worker: Arc::new(Notify::new()),
            notifier: Arc::new(Notify::new()),
        };
        let ch = sql::CALLBACK_CHANNEL;
        tokio::spawn(channel::listen(cfg.clone(), ch, wake.worker.clone()));
        tokio::spawn(channel::notify(cfg.clone(), ch, wake.notifier.clone()));
        wake
    }

    /// After a commit that may have written outbox rows.
    pub fn written(&self) {
        self.worker.notify_one();
        self.notifier.notify_one();
    }

    pub fn worker(&self) -> Arc<Notify> {
        self.worker.clone()
    }
}

pub(super) async fn claim(store: &PgStore, claim: &Claim) -> Result<Vec<Delivery>, CartError> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::CLAIM_CALLBACKS)
        .await
        .map_err(pg)?;
    let limit = claim.limit as i64;
    let candidates = (claim.limit * CANDIDATES_PER_ROW).max(64) as i64;
    let (e_keys, e_budgets) = claim.endpoints.columns();
    let (t_keys, t_budgets) = claim.tenants.columns();
    let rows = client
        .query(
            &stmt,
            &[
                &now(),
                &claim.lease_until,
                &limit,
                &candidates,
                &i64::from(claim.endpoints.default),
                &e_keys,
                &e_budgets,
                &claim.endpoints.closed(),
                &i64::from(claim.tenants.default),
                &t_keys,
                &t_budgets,
                &claim.tenants.closed(),
            ],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|r| {
            let endpoint: Option<String> = r.try_get(3).map_err(pg)?;
            Ok(Delivery {
                id: r.try_get(0).map_err(pg)?,
                tenant: TenantId(r.try_get(1).map_err(pg)?),
                url: r.try_get(2).map_err(pg)?,
                endpoint: endpoint.unwrap_or_default(),
                body: r.try_get(4).map_err(pg)?,
                attempts: r.try_get(5).map_err(pg)?,
            })
        })
        .collect()
}

pub(super) async fn backlog(store: &PgStore) -> Result<Backlog, CartError> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::CALLBACK_BACKLOG)
        .await
        .map_err(pg)?;
    let row = client.query_one(&stmt, &[&now()]).await.map_err(pg)?;
    let pending: i64 = row.try_get(0).map_err(pg)?;
    let due: i64 = row.try_get(1).map_err(pg)?;
    let oldest_due: Option<DateTime<Utc>> = row.try_get(2).map_err(pg)?;
    Ok(Backlog {
        pending: u64::try_from(pending).unwrap_or(0),
        due: u64::try_from(due).unwrap_or(0),
        oldest_due,
    })
}

pub(super) async fn record(store: &PgStore, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(sql::RECORD_CALLBACKS)
        .await
        .map_err(pg)?;
    let now = now();
    let rows: Vec<_> = outcomes.iter().map(|(id, o)| (*id, o.row(now))).collect();
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let states: Vec<&str> = rows.iter().map(|(_, r)| r.state).collect();
    let next: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.next_attempt_at).collect();
    let status: Vec<Option<i32>> = rows
        .iter()
        .map(|(_, r)| r.last_status.map(i32::from))
        .collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.last_error).collect();
    let delivered: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.delivered_at).collect();
    client
        .execute(&stmt, &[&ids, &states, &next, &status, &errors, &delivered])
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
