//! The Postgres store (deadpool-postgres + tokio-postgres).
//!
//! A change to one cart reads the cart (and the idempotency key, pipelined
//! on the same connection: one round trip), applies the command in Rust,
//! then writes cart, event and key with one conditional statement (second
//! round trip, its own transaction). When a concurrent writer won the race
//! the call runs again inside a transaction that locks the row first, so a
//! contended cart is serialised by Postgres instead of retried without end.
//! No `pg_notify` is sent in writes: watchers read the event log.

mod errors;
mod feed;
mod migrate;
mod sql;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::{NoTls, Row, types::Json};
use uuid::Uuid;

use self::errors::{PgFailure, classify, pg, pool};
use super::{
    CartPage, CartStore, Delivery, DeliveryState, IDEMPOTENCY_WINDOW, ListQuery, MergeRequest,
    Outcome, PageCursor, now, replay,
};
use crate::{
    domain::{
        Cart, CartError, CartEvent, CartId, CartStatus, Command, EventType, IdempotencyKey,
        NewCart, Policy, TenantId, callback::callback_due, cart::Change, merge,
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
    committed: Arc<Notify>,
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
        Ok(PgStore {
            pool,
            policy,
            feed,
            committed,
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
                    self.committed.notify_one();
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

/// Decodes the jsonb straight into a Cart (no serde_json::Value tree in
/// between); a document that does not decode is Internal, as before.
fn cart_at(row: &Row, idx: usize) -> Result<Cart, CartError> {
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

/// The remembered answer for `key`, if the key was used in the window.
async fn remembered(
    c: &impl GenericClient,
    tenant: &TenantId,
    key: Option<&IdempotencyKey>,
) -> Result<Option<Result<Cart, CartError>>, PgFailure> {
    let Some(key) = key else { return Ok(None) };
    let stmt = c.prepare_cached(sql::GET_KEY).await.map_err(fail)?;
    let cutoff = now() - IDEMPOTENCY_WINDOW;
    let row = c
        .query_opt(&stmt, &[&tenant.as_str(), &key.key, &cutoff])
        .await
        .map_err(fail)?;
    let Some(row) = row else { return Ok(None) };
    let fingerprint: Vec<u8> = row.try_get(0).map_err(fail)?;
    let Json(response): Json<Cart> = row.try_get(1).map_err(fail)?;
    Ok(Some(replay(&fingerprint, response, key)))
}

/// Writes the next version of `cart`; Ok(false) when another writer got there first.
async fn write(
    c: &impl GenericClient,
    tenant: &TenantId,
    cart: &Cart,
    change: Change,
    now: DateTime<Utc>,
    idem: Option<(&IdempotencyKey, &Cart)>,
) -> Result<bool, PgFailure> {
    let stmt = c.prepare_cached(sql::WRITE_CART).await.map_err(fail)?;
    let previous = change.previous_status.as_str();
    let (key, fingerprint, response) = match idem {
        Some((k, r)) => (
            Some(k.key.as_str()),
            Some(&k.fingerprint[..]),
            Some(Json(r)),
        ),
        None => (None, None, None),
    };
    let callback = callback_due(cart, change, now);
    let (cb_id, cb_url, cb_payload) = match &callback {
        Some(due) => (
            Some(Uuid::new_v4()),
            Some(due.url.as_str()),
            Some(Json(&due.payload)),
        ),
        None => (None, None, None),
    };
    let row = c
        .query_one(
            &stmt,
            &[
                &tenant.as_str(),
                &cart.id,
                &cart.version,
                &cart.status.as_str(),
                &cart.customer_id,
                &now,
                &cart.expires_at,
                &Json(cart),
                &change.event.as_str(),
                &previous,
                &key,
                &fingerprint,
                &response,
                &cb_id,
                &cb_url,
                &cb_payload,
            ],
        )
        .await
        .map_err(fail)?;
    Ok(row.get::<_, i64>(0) == 1)
}

impl PgStore {
    async fn try_apply(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
        lock: bool,
    ) -> Result<Cart, PgFailure> {
        let mut client = self.client().await.map_err(PgFailure::Error)?;
        let now = now();
        if !lock {
            let mut cart = match read(&client, tenant, id, idem, sql::GET_CART).await? {
                Loaded::Replay(answer) => return answer.map_err(PgFailure::Error),
                Loaded::Fresh(cart) => cart,
            };
            let change = cart
                .apply(cmd, expected_version, now, &self.policy)
                .map_err(PgFailure::Error)?;
            return match write(
                &client,
                tenant,
                &cart,
                change,
                now,
                idem.map(|k| (k, &cart)),
            )
            .await?
            {
                true => Ok(cart),
                false => Err(PgFailure::Retry),
            };
        }
        let tx = client.transaction().await.map_err(fail)?;
        let mut cart = match read(&tx, tenant, id, idem, sql::LOCK_CART).await? {
            Loaded::Replay(answer) => return answer.map_err(PgFailure::Error),
            Loaded::Fresh(cart) => cart,
        };
        let change = cart
            .apply(cmd, expected_version, now, &self.policy)
            .map_err(PgFailure::Error)?;
        if !write(&tx, tenant, &cart, change, now, idem.map(|k| (k, &cart))).await? {
            return Err(PgFailure::Retry);
        }
        tx.commit().await.map_err(fail)?;
        Ok(cart)
    }

    async fn try_merge(
        &self,
        tenant: &TenantId,
        req: &MergeRequest,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, PgFailure> {
        let mut client = self.client().await.map_err(PgFailure::Error)?;
        let now = now();
        let tx = client.transaction().await.map_err(fail)?;
        if let Some(answer) = remembered(&tx, tenant, idem).await? {
            return answer.map_err(PgFailure::Error);
        }
        let mut ids = vec![req.source];
        ids.extend(req.target);
        let stmt = tx.prepare_cached(sql::LOCK_CARTS).await.map_err(fail)?;
        let rows = tx
            .query(&stmt, &[&tenant.as_str(), &ids])
            .await
            .map_err(fail)?;
        let mut carts = rows.iter().map(doc).collect::<Result<Vec<_>, _>>()?;
        let mut take = |id: CartId| {
            let at = carts
                .iter()
                .position(|c| c.id == id)
                .ok_or(PgFailure::Error(CartError::CartNotFound))?;
            Ok::<_, PgFailure>(carts.swap_remove(at))
        };
        let mut source = take(req.source)?;
        let mut target = req.target.map(&mut take).transpose()?;
        let out = merge(
            &mut source,
            target.as_mut(),
            &req.customer_id,
            req.strategy,
            req.expected_version,
            now,
            &self.policy,
        )
        .map_err(PgFailure::Error)?;
        let response = match (&target, out.returns_target) {
            (Some(t), true) => t.clone(),
            _ => source.clone(),
        };
        write(
            &tx,
            tenant,
            &source,
            out.source,
            now,
            idem.map(|k| (k, &response)),
        )
        .await?;
        if let (Some(t), Some(change)) = (&target, out.target) {
            write(&tx, tenant, t, change, now, None).await?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(response)
    }

    async fn try_create(
        &self,
        tenant: &TenantId,
        new: &NewCart,
        fingerprint: [u8; 32],
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, PgFailure> {
        let client = self.client().await.map_err(PgFailure::Error)?;
        if let Some(answer) = remembered(&client, tenant, idem).await? {
            return answer.map_err(PgFailure::Error);
        }
        let now = now();
        let cart = Cart::create(Uuid::new_v4(), new.clone(), now, &self.policy)
            .map_err(PgFailure::Error)?;
        let reference = (!cart.reference.is_empty()).then_some(cart.reference.as_str());
        let (key, key_fp) = match idem {
            Some(k) => (Some(k.key.as_str()), Some(&k.fingerprint[..])),
            None => (None, None),
        };
        let stmt = client
            .prepare_cached(sql::INSERT_CART)
            .await
            .map_err(fail)?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &tenant.as_str(),
                    &cart.id,
                    &cart.status.as_str(),
                    &cart.customer_id,
                    &reference,
                    &now,
                    &cart.expires_at,
                    &&fingerprint[..],
                    &Json(&cart),
                    &key,
                    &key_fp,
                ],
            )
            .await
            .map_err(fail)?;
        if row.get::<_, i64>(0) == 1 {
            return Ok(cart);
        }
        // The reference is taken: the same request answers the cart it made.
        let stmt = client
            .prepare_cached(sql::GET_BY_REFERENCE)
            .await
            .map_err(fail)?;
        let Some(row) = client
            .query_opt(&stmt, &[&tenant.as_str(), &reference])
            .await
            .map_err(fail)?
        else {
            return Err(PgFailure::Retry); // deleted in between; cannot happen today
        };
        let stored: Vec<u8> = row.try_get(1).map_err(fail)?;
        if stored == fingerprint {
            doc(&row)
        } else {
            Err(PgFailure::Error(CartError::ReferenceTaken(cart.reference)))
        }
    }
}

/// Reads a cart and, pipelined on the same connection, the idempotency key.
async fn read(
    c: &impl GenericClient,
    tenant: &TenantId,
    id: CartId,
    idem: Option<&IdempotencyKey>,
    query: &str,
) -> Result<Loaded, PgFailure> {
    let cart = async {
        let stmt = c.prepare_cached(query).await.map_err(fail)?;
        let row = c
            .query_opt(&stmt, &[&tenant.as_str(), &id])
            .await
            .map_err(fail)?;
        row.as_ref().map(doc).transpose()
    };
    match tokio::try_join!(cart, remembered(c, tenant, idem))? {
        (_, Some(answer)) => Ok(Loaded::Replay(answer)),
        (Some(cart), None) => Ok(Loaded::Fresh(cart)),
        (None, None) => Err(PgFailure::Error(CartError::CartNotFound)),
    }
}

/// What a change finds before it applies.
enum Loaded {
    /// The key was used already: this is the answer.
    Replay(Result<Cart, CartError>),
    Fresh(Cart),
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
        let more = carts.len() > q.page_size;
        carts.truncate(q.page_size);
        let next = if more {
            carts.last().map(|c| PageCursor {
                created_at: c.created_at,
                id: c.id,
            })
        } else {
            None
        };
        Ok(CartPage { carts, next })
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
        let head = self.feed.head();
        if head <= after {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
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
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let client = self.client().await?;
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

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        let client = self.client().await?;
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

    async fn expire_due(&self, limit: usize) -> Result<usize, CartError> {
        let mut client = self.client().await?;
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
            let Ok(change) = cart.apply(&Command::Expire, 0, now, &self.policy) else {
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
            self.committed.notify_one();
        }
        Ok(expired)
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

    async fn claim_callbacks(
        &self,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, CartError> {
        let client = self.client().await?;
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

    async fn record_callback(&self, id: Uuid, outcome: &Outcome) -> Result<(), CartError> {
        let client = self.client().await?;
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

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        let client = self.client().await?;
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

    async fn head_now(&self) -> Result<i64, CartError> {
        let client = self.client().await?;
        feed::head_now(&client).await
    }
}
