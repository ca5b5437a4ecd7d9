//! The Postgres store (deadpool-postgres + tokio-postgres).
//!
//! A change to one cart reads the cart (and the idempotency key, pipelined
//! on the same connection: one round trip), applies the command in Rust,
//! then writes cart, event and key with one conditional statement (second
//! round trip, its own transaction). When a concurrent writer won the race
//! the call runs again inside a transaction that locks the row first, so a
//! contended cart is serialised by Postgres instead of retried without end.
//! No `pg_notify` is sent in writes: watchers read the event log.

mod channel;
mod errors;
mod events;
mod feed;
mod migrate;
mod outbox;
mod sql;
mod writes;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::{NoTls, Row, types::Json};
use uuid::Uuid;

use self::errors::{PgFailure, classify, pg, pool};
use super::{
    Backlog, CartPage, CartStore, Claim, Delivery, DeliveryState, IDEMPOTENCY_WINDOW, ListQuery,
    MergeRequest, Outcome, now,
};
use crate::{
    domain::{
        Cart, CartError, CartEvent, CartId, CartStatus, Command, EventType, IdempotencyKey,
        NewCart, Policy, TenantId, callback::may_call_back,
    },
    watch::EventFeed,
};

/// Attempts of one call before it answers UNAVAILABLE: the first is
/// optimistic, later ones lock the cart and only meet a concurrent key or a
/// serialization failure.
const MAX_ATTEMPTS: usize = 4;

#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub pool_size: usize,
    /// Bound on waiting for a connection (and on opening one).
    pub timeout: Duration,
}

pub struct PgStore {
    pool: Pool,
    policy: Policy,
    feed: Arc<EventFeed>,
    /// Poked after each commit so this replica's watchers hear of it at once.
    committed: Arc<feed::Committed>,
    /// Poked after a commit that may have written a callback.
    outbox: outbox::Wake,
}

impl PgStore {
    /// Connects, applies the embedded migrations under an advisory lock and
    /// builds the pool.
    pub async fn connect(opts: &PgOptions, policy: Policy) -> Result<PgStore, CartError> {
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| CartError::Internal(format!("DATABASE_URL is not a Postgres URL: {e}")))?;
        cfg.connect_timeout(opts.timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("cart-service");
        }
        migrate::run(&cfg).await?;
        let manager = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CartError::Internal(format!("pool: {e}")))?;
        let feed = Arc::new(EventFeed::new());
        let committed = feed::start(cfg.clone(), feed.clone()).await;
        let outbox = outbox::Wake::start(&cfg);
        Ok(PgStore {
            pool,
            policy,
            feed,
            committed,
            outbox,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CartError> {
        self.pool.get().await.map_err(pool)
    }

    /// Runs `attempt` until it succeeds, fails for good or runs out of tries.
    async fn retrying<'a, F, Fut>(
        &'a self,
        tenant: &TenantId,
        idem: Option<&IdempotencyKey>,
        mut attempt: F,
    ) -> Result<Cart, CartError>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<Cart, PgFailure>> + 'a,
    {
        for n in 0..MAX_ATTEMPTS {
            match attempt(n).await {
                Ok(cart) => {
                    self.committed.poke();
                    if may_call_back(&cart) {
                        self.outbox.written();
                    }
                    return Ok(cart);
                }
                Err(PgFailure::Error(e)) => return Err(e),
                Err(PgFailure::Retry) => tracing::debug!(attempt = n, "cart write raced, retrying"),
                Err(PgFailure::KeyTaken) => {
                    // Either a concurrent call with this key committed (the
                    // next attempt replays it) or an expired key is in the way.
                    if let Some(key) = idem {
                        let client = self.client().await?;
                        let cutoff = now() - IDEMPOTENCY_WINDOW;
                        client
                            .execute(sql::FORGET_KEY, &[&tenant.as_str(), &key.key, &cutoff])
                            .await
                            .map_err(pg)?;
                    }
                }
            }
        }
        Err(CartError::Unavailable(
            "too much contention on this cart; retry".into(),
        ))
    }
}

fn fail(e: tokio_postgres::Error) -> PgFailure {
    classify(&e)
}

fn doc(row: &Row) -> Result<Cart, PgFailure> {
    cart_at(row, 0).map_err(PgFailure::Error)
}

fn cart_at(row: &Row, idx: usize) -> Result<Cart, CartError> {
    // Straight into Cart: no serde_json::Value tree in between (measured
    // in BENCHMARKS.md); a document that does not decode is Internal.
    let Json(cart): Json<Cart> = row.try_get(idx).map_err(pg)?;
    Ok(cart)
}

/// Reads a row of the event queries in `sql` (see its `events!` macro).
fn event_from_row(row: &Row) -> Result<CartEvent, CartError> {
    let unknown =
        |what: &str, v: &str| CartError::Internal(format!("unknown {what} {v:?} in cart_events"));
    let kind: &str = row.try_get(2).map_err(pg)?;
    let previous: Option<&str> = row.try_get(3).map_err(pg)?;
    Ok(CartEvent {
        sequence: row.try_get(0).map_err(pg)?,
        tenant: TenantId(row.try_get(1).map_err(pg)?),
        event_type: EventType::parse(kind).ok_or_else(|| unknown("event type", kind))?,
        previous_status: previous
            .map(|p| CartStatus::parse(p).ok_or_else(|| unknown("status", p)))
            .transpose()?,
        occurred_at: row.try_get(4).map_err(pg)?,
        cart: cart_at(row, 5)?,
    })
}

#[async_trait]
impl CartStore for PgStore {
    async fn create(
        &self,
        tenant: &TenantId,
        new: NewCart,
        fingerprint: [u8; 32],
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        self.retrying(tenant, idem, |_| {
            self.try_create(tenant, &new, fingerprint, idem)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::GET_CART).await.map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&tenant.as_str(), &id])
            .await
            .map_err(pg)?;
        let row = row.ok_or(CartError::CartNotFound)?;
        doc(&row).map_err(PgFailure::into_error)
    }

    async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<CartPage, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::LIST_CARTS).await.map_err(pg)?;
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        let limit = (q.page_size + 1) as i64;
        let rows = client
            .query(
                &stmt,
                &[
                    &tenant.as_str(),
                    &q.customer_id,
                    &statuses,
                    &q.after.map(|a| a.created_at),
                    &q.after.map(|a| a.id),
                    &limit,
                ],
            )
            .await
            .map_err(pg)?;
        let mut carts = Vec::with_capacity(rows.len());
        for row in &rows {
            carts.push(doc(row).map_err(PgFailure::into_error)?);
        }
        Ok(CartPage::from_overfetch(carts, q.page_size))
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        self.retrying(tenant, idem, |n| {
            self.try_apply(tenant, id, cmd, expected_version, idem, n > 0)
        })
        .await
    }

    async fn merge(
        &self,
        tenant: &TenantId,
        req: &MergeRequest,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        self.retrying(tenant, idem, |_| self.try_merge(tenant, req, idem))
            .await
    }

    async fn check_health(&self) -> Result<(), CartError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }

    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        events::tenant_events(self, tenant, after, limit).await
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        events::cart_events(self, tenant, cart, after_version, limit).await
    }

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        events::current_event(self, tenant, cart).await
    }

    async fn forget_old_keys(&self, limit: usize) -> Result<usize, CartError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::FORGET_OLD_KEYS)
            .await
            .map_err(pg)?;
        let cutoff = now() - IDEMPOTENCY_WINDOW;
        let n = client
            .execute(&stmt, &[&cutoff, &(limit as i64)])
            .await
            .map_err(pg)?;
        Ok(n as usize)
    }

    async fn expire_due(&self, limit: usize) -> Result<usize, CartError> {
        events::expire_due(self, limit).await
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }

    fn pool_status(&self) -> Option<super::PoolUse> {
        let s = self.pool.status();
        Some(super::PoolUse {
            size: s.size,
            available: s.available,
            max_size: s.max_size,
            waiting: s.waiting,
        })
    }

    async fn claim_callbacks(&self, claim: &Claim) -> Result<Vec<Delivery>, CartError> {
        outbox::claim(self, claim).await
    }

    async fn record_callbacks(&self, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError> {
        outbox::record(self, outcomes).await
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        outbox::deliveries_of(self, tenant, cart).await
    }

    async fn callback_backlog(&self) -> Result<Backlog, CartError> {
        outbox::backlog(self).await
    }

    fn callbacks_written(&self) -> Arc<Notify> {
        self.outbox.worker()
    }

    async fn head_now(&self) -> Result<i64, CartError> {
        let client = self.client().await?;
        feed::head_now(&client).await
    }
}
