//! The write path: read the cart and the idempotency key (pipelined), apply
//! the command in Rust, write cart + event + key + callback in ONE
//! statement conditioned on the version read; on a lost race, again under a
//! row lock.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::Json;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{PgStore, doc, errors::PgFailure, fail, sql, traced};
use crate::{
    domain::{
        Cart, CartError, CartId, Command, IdempotencyKey, NewCart, TenantId,
        callback::callback_due, cart::Change, merge,
    },
    store::{IDEMPOTENCY_WINDOW, MergeRequest, now, replay},
};

/// The remembered answer for `key`, if the key was used in the window.
pub(super) async fn remembered(
    c: &impl GenericClient,
    tenant: &TenantId,
    key: Option<&IdempotencyKey>,
) -> Result<Option<Result<Cart, CartError>>, PgFailure> {
    let Some(key) = key else { return Ok(None) };
    let stmt = c.prepare_cached(sql::GET_KEY).await.map_err(fail)?;
    let cutoff = now() - IDEMPOTENCY_WINDOW;
    let row = c
        .query_opt(&stmt, &[&tenant.as_str(), &key.key, &cutoff])
        .instrument(traced::statement(sql::GET_KEY))
        .await
        .map_err(fail)?;
    let Some(row) = row else { return Ok(None) };
    let fingerprint: Vec<u8> = row.try_get(0).map_err(fail)?;
    let Json(response): Json<Cart> = row.try_get(1).map_err(fail)?;
    Ok(Some(replay(&fingerprint, response, key)))
}

/// Writes the next version of `cart`; Ok(false) when another writer got there first.
pub(super) async fn write(
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
        .instrument(traced::statement(sql::WRITE_CART))
        .await
        .map_err(fail)?;
    Ok(row.get::<_, i64>(0) == 1)
}

impl PgStore {
    pub(super) async fn try_apply(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
        lock: bool,
    ) -> Result<Cart, PgFailure> {
        let mut client = self.client().await.map_err(PgFailure::Error)?;
        if !lock {
            return self
                .read_apply_write(
                    &client,
                    sql::GET_CART,
                    tenant,
                    id,
                    cmd,
                    expected_version,
                    idem,
                )
                .await;
        }
        let tx = client.transaction().await.map_err(fail)?;
        let cart = self
            .read_apply_write(&tx, sql::LOCK_CART, tenant, id, cmd, expected_version, idem)
            .await?;
        tx.commit().await.map_err(fail)?;
        Ok(cart)
    }

    /// Reads the cart with `read_sql` (locking it or not), applies the
    /// command and writes the next version; Retry when another writer won.
    #[allow(clippy::too_many_arguments)] // try_apply's own arguments, passed through
    async fn read_apply_write(
        &self,
        c: &impl GenericClient,
        read_sql: &str,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, PgFailure> {
        let now = now();
        let mut cart = match read(c, tenant, id, idem, read_sql).await? {
            Loaded::Replay(answer) => return answer.map_err(PgFailure::Error),
            Loaded::Fresh(cart) => cart,
        };
        let change = cart
            .apply(cmd, expected_version, now, &self.policy)
            .map_err(PgFailure::Error)?;
        if write(c, tenant, &cart, change, now, idem.map(|k| (k, &cart))).await? {
            Ok(cart)
        } else {
            Err(PgFailure::Retry)
        }
    }

    pub(super) async fn try_merge(
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
            .instrument(traced::statement(sql::LOCK_CARTS))
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
        let response = out.answer(&source, target.as_ref()).clone();
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

    pub(super) async fn try_create(
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
            .instrument(traced::statement(sql::INSERT_CART))
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
            .instrument(traced::statement(sql::GET_BY_REFERENCE))
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
            .instrument(traced::statement(query))
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
