//! The Postgres store (deadpool-postgres + tokio-postgres): every port of
//! `crate::ports`. Units of work are in `unit` (the write path), the event
//! log in `events`, the callback outbox in `outbox`, the feed's publisher
//! in `feed`. No `pg_notify` is sent in writes: watchers read the event
//! log, and other replicas hear of commits from a NOTIFY sent after them.

mod channel;
mod errors;
mod events;
mod feed;
mod migrate;
mod outbox;
mod retention;
mod sql;
mod traced;
mod unit;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row, types::Json};
use tracing::Instrument as _;

use self::errors::{pg, pool};
use crate::{
    domain::{
        Cart, CartError, CartEvent, CartId, CartStatus, EventType, TenantId, limits::MAX_PAGE_BYTES,
    },
    feed::EventFeed,
    metrics::PoolUse,
    ports::{CartPage, CartRepository, Isolation, ListQuery, PageBuilder, UnitOfWork},
};

#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub pool_size: usize,
    /// Bound on waiting for a connection (and on opening one).
    pub timeout: Duration,
}

pub struct PgStore {
    pool: Pool,
    feed: Arc<EventFeed>,
    /// Poked after each commit so this replica's watchers hear of it at once.
    committed: Arc<feed::Committed>,
    /// Told after a commit that wrote a callback delivery.
    outbox: outbox::Wake,
}

impl PgStore {
    /// Connects, applies the embedded migrations under an advisory lock and
    /// builds the pool.
    pub async fn connect(opts: &PgOptions) -> Result<PgStore, CartError> {
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| CartError::internal_from("DATABASE_URL is not a Postgres URL", e))?;
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
            .map_err(|e| CartError::internal_from("building the pool", e))?;
        let feed = Arc::new(EventFeed::new());
        let committed = feed::start(cfg.clone(), feed.clone()).await;
        let outbox = outbox::Wake::start(&cfg);
        Ok(PgStore {
            pool,
            feed,
            committed,
            outbox,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CartError> {
        self.pool.get().await.map_err(pool)
    }

    /// Connection pool use, for metrics.
    pub fn pool_use(&self) -> PoolUse {
        let s = self.pool.status();
        PoolUse {
            size: s.size,
            available: s.available,
            max_size: s.max_size,
            waiting: s.waiting,
        }
    }
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
        |what: &str, v: &str| CartError::internal(format!("unknown {what} {v:?} in cart_events"));
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
impl CartRepository for PgStore {
    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::GET_CART).await.map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&tenant.as_str(), &id])
            .instrument(traced::statement(sql::GET_CART))
            .await
            .map_err(pg)?;
        cart_at(&row.ok_or(CartError::CartNotFound)?, 0)
    }

    async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<CartPage, CartError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::LIST_CARTS).await.map_err(pg)?;
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        let limit = (q.page_size + 1) as i64;
        let budget = MAX_PAGE_BYTES as i64;
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
                    &budget,
                ],
            )
            .instrument(traced::statement(sql::LIST_CARTS))
            .await
            .map_err(pg)?;
        let mut page = PageBuilder::new(q.page_size);
        for row in &rows {
            let held: Option<Json<Cart>> = row.try_get(0).map_err(pg)?;
            let Some(Json(cart)) = held else {
                page.end_here();
                break;
            };
            if !page.offer(&cart) {
                break;
            }
        }
        Ok(page.finish())
    }

    async fn begin(&self, isolation: Isolation) -> Result<Box<dyn UnitOfWork>, CartError> {
        let client = self.client().await?;
        let locked = isolation == Isolation::Locked;
        let unit = unit::PgUnit::begin(client, locked, self.committed.clone(), self.outbox.clone())
            .await?;
        Ok(Box::new(unit))
    }

    async fn forget_key(
        &self,
        tenant: &TenantId,
        key: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<(), CartError> {
        let client = self.client().await?;
        client
            .execute(sql::FORGET_KEY, &[&tenant.as_str(), &key, &cutoff])
            .instrument(traced::statement(sql::FORGET_KEY))
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn forget_keys_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::FORGET_OLD_KEYS)
            .await
            .map_err(pg)?;
        let n = client
            .execute(&stmt, &[&cutoff, &(limit as i64)])
            .await
            .map_err(pg)?;
        Ok(n as usize)
    }

    async fn check_health(&self) -> Result<(), CartError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }
}
