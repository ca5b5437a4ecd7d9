//! The Postgres store (deadpool-postgres + tokio-postgres): every port of
//! `crate::ports`. Units of work are in `unit` (the write path), the event
//! log in `events`, the callback outbox in `outbox`, the feed's publisher
//! in `feed`. No `pg_notify` is sent in writes: watchers read the event
//! log, and other replicas hear of commits from a NOTIFY sent after them.

mod changes;
mod channel;
mod clock;
mod errors;
mod events;
mod feed;
mod migrate;
mod outbox;
mod recent;
mod retention;
mod rows;
mod sql;

/// The statements the service runs and its session settings, for the
/// floor server (`src/bin/cart-floor/`), which must run the very same SQL
/// the same way.
pub mod statements {
    pub use super::SESSION_SETTINGS;
    pub use super::sql::{GET_CART, STAMP_CART, WRITE_CART_ONE_LINE, WRITE_CART_ONE_LINE_PLAIN};

    /// Prepares `shorter`, a write that leaves some of `full`'s parameters
    /// unused (`WRITE_*_PLAIN`), with the types Postgres infers for `full`'s
    /// (it cannot infer the type of a parameter a statement does not use),
    /// so that both take one parameter list.
    pub async fn prepare_shorter(
        c: &deadpool_postgres::Object,
        full: &str,
        shorter: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let full = c.prepare_cached(full).await?;
        c.prepare_typed_cached(shorter, full.params()).await
    }
}
mod traced;
mod unit;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, types::ToSql};
use tracing::Instrument as _;

use self::{
    errors::{fail, pg, pool, settle},
    recent::{Kept, Recent},
    rows::Current,
};
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
    /// Encoded bytes of the carts the store remembers (`recent`); 0: none.
    pub cache_bytes: u64,
}

pub struct PgStore {
    pool: Pool,
    feed: Arc<EventFeed>,
    /// Poked after each commit so this replica's watchers hear of it at once.
    committed: Arc<feed::Committed>,
    /// Told after a commit that wrote a callback delivery.
    outbox: outbox::Wake,
    /// The carts this replica last read or wrote, for changes.
    recent: Arc<recent::Recent>,
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
            recent: Arc::new(recent::Recent::new(opts.cache_bytes)),
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

/// The settings of the service's sessions: bounds on what one of its
/// statements or transactions may hold: an event writer delays the events
/// after it until it ends (see `feed`), and a stuck one must not hold
/// watchers back for long. (Plans stay Postgres's choice: forcing generic
/// plans made the retention and ListCarts statements, whose `LIMIT $n` a
/// generic plan takes for a tenth of the table, scan whole tables.)
pub const SESSION_SETTINGS: &str =
    "-c statement_timeout=10s -c idle_in_transaction_session_timeout=10s";

/// The pool's connection settings: `cfg` with [`SESSION_SETTINGS`] after
/// any options of its own.
fn bounded(cfg: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut cfg = cfg.clone();
    let options = match cfg.get_options() {
        Some(own) => format!("{own} {SESSION_SETTINGS}"),
        None => SESSION_SETTINGS.to_string(),
    };
    cfg.options(&options);
    cfg
}

/// Runs one of the prepared statements of `sql`.
async fn query(
    c: &deadpool_postgres::Object,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Conflict> {
    let stmt = c.prepare_cached(text).await.map_err(fail)?;
    c.query(&stmt, params)
        .instrument(traced::statement(text))
        .await
        .map_err(fail)
}

/// The tenant's carts among `ids` as they stand (those that exist), read
/// through what `recent` remembers: a cart remembered at the version
/// stored is not read again, one read is remembered. When every cart is
/// remembered, their stored versions are checked first (one cheap
/// statement); only carts changed since are read whole.
async fn get_carts(
    c: &deadpool_postgres::Object,
    tenant: &TenantId,
    ids: &[CartId],
    recent: &Recent,
) -> Result<Vec<Arc<Kept>>, Conflict> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let remembered: Vec<Option<Arc<Kept>>> = ids.iter().map(|&id| recent.get(tenant, id)).collect();
    let versions: Vec<Option<i64>> = remembered
        .iter()
        .map(|k| k.as_ref().map(|k| k.cart.version))
        .collect();
    // One cart: the statements of one (see GET_CART).
    let one = (ids.len() == 1).then(|| (ids[0], versions[0]));
    if versions.iter().all(Option::is_some) {
        let rows = match one {
            Some((id, _)) => query(c, sql::STAMP_CART, &[&tenant.as_str(), &id]).await?,
            None => query(c, sql::STAMP_CARTS, &[&tenant.as_str(), &ids]).await?,
        };
        let stored = rows::versions(&rows)?;
        let unchanged = stored.len() == ids.len()
            && stored.iter().all(|(id, version)| {
                ids.binary_search(id)
                    .is_ok_and(|at| versions[at] == Some(*version))
            });
        if unchanged {
            return Ok(remembered.into_iter().flatten().collect());
        }
    }
    let rows = match one {
        Some((id, version)) => query(c, sql::GET_CART, &[&tenant.as_str(), &id, &version]).await?,
        None => query(c, sql::GET_CARTS, &[&tenant.as_str(), &ids, &versions]).await?,
    };
    let at = |id: CartId| ids.binary_search(&id).ok();
    rows::current(&rows, |id| at(id).and_then(|i| versions[i]))?
        .into_iter()
        .map(|found| match found {
            Current::Read(cart) => Ok(recent.keep(tenant, *cart, None)),
            Current::AsKnown(id) => at(id)
                .and_then(|i| remembered[i].clone())
                .ok_or_else(|| CartError::internal("a known cart not asked for").into()),
        })
        .collect()
}

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
        get_carts(&client, tenant, &[id], &self.recent)
            .await
            .map_err(settle)?
            .pop()
            .map(|kept| kept.cart.clone())
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
        let unit = unit::PgUnit::begin(
            client,
            isolation,
            self.committed.clone(),
            self.outbox.clone(),
            self.recent.clone(),
        )
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
