//! The Postgres store (deadpool-postgres + tokio-postgres): every port of
//! `crate::ports`. Units of work are in `unit` (the write path), the event
//! log in `events`, the callback outbox in `outbox`, the feed's publisher
//! in `feed`. No `pg_notify` is sent in writes: watchers read the event
//! log, and other replicas hear of commits from a NOTIFY sent after them.

mod channel;
mod clock;
mod errors;
mod events;
mod feed;
mod migrate;
mod outbox;
mod retention;
mod rows;
mod sql;
mod traced;
mod unit;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, types::ToSql};
use tracing::Instrument as _;

use self::errors::{fail, pg, pool, settle};
use crate::{
    domain::{Cart, CartError, CartId, TenantId, limits::MAX_PAGE_BYTES},
    feed::EventFeed,
    metrics::PoolUse,
    ports::{
        CartPage, CartRepository, Conflict, Isolation, ListQuery, PageBuilder, PageCursor,
        UnitOfWork,
    },
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
            bounded(&cfg),
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
        // Before anything is stamped: the database's clock is the service's.
        clock::sync(&pool).await?;
        clock::keep_synced(pool.clone());
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

    /// Applies the embedded migrations up to `version` and no further, as
    /// `connect` applies them all: for operators staging an upgrade, and for
    /// the test that upgrades a database of an older schema.
    pub async fn migrate_to(url: &str, version: i32) -> Result<(), CartError> {
        let cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CartError::internal_from("DATABASE_URL is not a Postgres URL", e))?;
        migrate::run_to(&cfg, Some(version)).await
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

/// Bounds on what one of the service's statements or transactions may
/// hold: an event writer delays the events after it until it ends (see
/// `feed`), and a stuck one must not hold watchers back for long.
const SESSION_BOUNDS: &str = "-c statement_timeout=10s -c idle_in_transaction_session_timeout=10s";

/// The pool's connection settings: `cfg` with [`SESSION_BOUNDS`] after any
/// options of its own.
fn bounded(cfg: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut cfg = cfg.clone();
    let options = match cfg.get_options() {
        Some(own) => format!("{own} {SESSION_BOUNDS}"),
        None => SESSION_BOUNDS.to_string(),
    };
    cfg.options(&options);
    cfg
}

/// The tenant's carts among `ids` as they stand (those that exist).
async fn get_carts(
    c: &deadpool_postgres::Object,
    tenant: &TenantId,
    ids: &[CartId],
) -> Result<Vec<Cart>, Conflict> {
    let stmt = c.prepare_cached(sql::GET_CARTS).await.map_err(fail)?;
    let rows = c
        .query(&stmt, &[&tenant.as_str(), &ids])
        .instrument(traced::statement(sql::GET_CARTS))
        .await
        .map_err(fail)?;
    Ok(rows::carts(&rows)?.into_iter().flatten().collect())
}

/// The first-page cursor: before every cart.
fn first_page() -> PageCursor {
    PageCursor {
        created_at: DateTime::<Utc>::MAX_UTC,
        id: CartId::max(),
    }
}

#[async_trait]
impl CartRepository for PgStore {
    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        let client = self.client().await?;
        get_carts(&client, tenant, &[id])
            .await
            .map_err(settle)?
            .pop()
            .ok_or(CartError::CartNotFound)
    }

    async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<CartPage, CartError> {
        let client = self.client().await?;
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        let after = q.after.unwrap_or_else(first_page);
        let limit = (q.page_size + 1) as i64;
        let budget = MAX_PAGE_BYTES as i64;
        let common: [&(dyn ToSql + Sync); 5] = [
            &tenant.as_str(),
            &after.created_at,
            &after.id,
            &limit,
            &budget,
        ];
        // A statement per filter shape, each served by its own index under
        // custom and generic plans alike (no catch-all predicates).
        let (query, params) = match (q.customer_id.is_empty(), statuses.is_empty()) {
            (true, true) => (sql::LIST_CARTS, common.to_vec()),
            (false, true) => (
                sql::LIST_CUSTOMER_CARTS,
                [&common[..], &[&q.customer_id]].concat(),
            ),
            (true, false) => (sql::LIST_STATUS_CARTS, [&common[..], &[&statuses]].concat()),
            (false, false) => (
                sql::LIST_CUSTOMER_STATUS_CARTS,
                [&common[..], &[&q.customer_id, &statuses]].concat(),
            ),
        };
        let stmt = client.prepare_cached(query).await.map_err(pg)?;
        let rows = client
            .query(&stmt, &params)
            .instrument(traced::statement(query))
            .await
            .map_err(pg)?;
        let found = rows::carts(&rows)?;
        // A cart answered without its head is past the byte budget: the
        // page ends before it.
        let cut = found.iter().any(Option::is_none);
        let mut carts: Vec<Cart> = found.into_iter().flatten().collect();
        carts.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
        let mut page = PageBuilder::new(q.page_size);
        let offered = carts.iter().take_while(|c| page.offer(c)).count();
        if cut && offered == carts.len() {
            page.end_here();
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
