//! Units of work on Postgres. `Optimistic`: statements on a pooled
//! connection with no transaction, so an uncontended change is two round
//! trips (read the cart and the key, pipelined; then ONE statement that
//! writes cart, event, key and callback on condition of the version read).
//! `Locked`: the same statements inside a transaction whose reads lock the
//! carts (`FOR UPDATE`). `Remembered`: as `Optimistic`, with the cart taken
//! from `recent` when this replica has it, so a change is one round trip.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::{
    Row,
    types::{Json, ToSql},
};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    changes::{NewLines, changed_lines, head_changed, head_of},
    errors::fail,
    feed::Committed,
    get_carts,
    outbox::Wake,
    recent::{Kept, Recent},
    rows, sql, statements, traced,
};
use crate::{
    domain::{Cart, CartError, CartId, IdempotencyKey, TenantId, size::encoded_len},
    ports::{Conflict, Inserted, Isolation, KeyRecord, Loaded, Remembered, UnitOfWork, Write},
};

pub(super) struct PgUnit {
    /// None only once the connection has been taken out of the pool.
    client: Option<Object>,
    /// A transaction is open (`Locked`, not yet ended).
    in_tx: bool,
    /// Something was written in the open transaction.
    wrote: bool,
    /// A callback delivery was written in the open transaction.
    wrote_callback: bool,
    committed: Arc<Committed>,
    callbacks: Wake,
    /// The carts as this unit loaded them: a save writes only the lines
    /// that differ.
    loaded: HashMap<CartId, Before>,
    /// Loads may answer carts from `recent` (`Isolation::Remembered`).
    remembers: bool,
    recent: Arc<Recent>,
}

/// A cart as a unit loaded it.
struct Before {
    kept: Arc<Kept>,
    /// Taken from memory, not read: a save that finds another version
    /// stored is `Stale`, not `Raced`.
    remembered: bool,
}

impl PgUnit {
    pub(super) async fn begin(
        client: Object,
        isolation: Isolation,
        committed: Arc<Committed>,
        callbacks: Wake,
        recent: Arc<Recent>,
    ) -> Result<PgUnit, CartError> {
        let locked = isolation == Isolation::Locked;
        if locked {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(super::errors::pg)?;
        }
        Ok(PgUnit {
            client: Some(client),
            in_tx: locked,
            wrote: false,
            wrote_callback: false,
            committed,
            callbacks,
            loaded: HashMap::new(),
            remembers: isolation == Isolation::Remembered,
            recent,
        })
    }

    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a unit of work keeps its connection")
    }

    /// After a write took effect: tells watchers (and callback workers,
    /// when it wrote a delivery) at once outside a transaction, at commit
    /// inside.
    fn wrote(&mut self, callback: bool) {
        if self.in_tx {
            self.wrote = true;
            self.wrote_callback |= callback;
        } else {
            self.committed.poke();
            if callback {
                self.callbacks.written();
            }
        }
    }
}

/// What a key's row (GET_KEY) remembers: the cart at the version it
/// answered, or, once retention has dropped that version, the cart as it
/// stands (see README, Retention).
async fn answer_of_key(
    c: &Object,
    tenant: &TenantId,
    row: &Row,
    recent: &Recent,
) -> Result<Remembered, Conflict> {
    let id: CartId = row.try_get(1).map_err(fail)?;
    let version: i64 = row.try_get(2).map_err(fail)?;
    let stmt = c.prepare_cached(sql::CART_AT_VERSION).await.map_err(fail)?;
    let rows = c
        .query(&stmt, &[&tenant.as_str(), &id, &version])
        .instrument(traced::statement(sql::CART_AT_VERSION))
        .await
        .map_err(fail)?;
    let response = match rows::events(&rows)?.pop() {
        Some(event) => event.cart,
        None => get_carts(c, tenant, &[id], recent)
            .await?
            .pop()
            .map(|kept| kept.cart.clone())
            .ok_or(Conflict::Retry)?, // purged in between: try again
    };
    Ok(Remembered {
        fingerprint: row.try_get(0).map_err(fail)?,
        response,
        recorded_at: row.try_get(3).map_err(fail)?,
    })
}

/// The encoded size (`encoded_len`) a ListCarts page budgets for a cart.
fn stored_size(encoded: usize) -> i32 {
    i32::try_from(encoded).unwrap_or(i32::MAX)
}

impl Drop for PgUnit {
    fn drop(&mut self) {
        // Dropped mid-transaction (the call was cancelled): the connection
        // must not go back to the pool inside it. Closing it rolls back.
        if self.in_tx
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

#[async_trait]
impl UnitOfWork for PgUnit {
    async fn load(
        &mut self,
        tenant: &TenantId,
        ids: &[CartId],
        key: Option<&str>,
    ) -> Result<Loaded, Conflict> {
        let locked = self.in_tx;
        let in_memory: Option<Vec<Arc<Kept>>> = if self.remembers && !ids.is_empty() {
            ids.iter().map(|&id| self.recent.get(tenant, id)).collect()
        } else {
            None
        };
        let from_memory = in_memory.is_some();
        let (c, recent) = (self.client(), &self.recent);
        let carts = async {
            if let Some(kept) = in_memory {
                return Ok(kept);
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            if locked {
                // Its snapshot comes after the locks: the read then sees
                // the carts as they stand while this unit holds them.
                let stmt = c.prepare_cached(sql::LOCK_CARTS).await.map_err(fail)?;
                c.query(&stmt, &[&tenant.as_str(), &ids])
                    .instrument(traced::statement(sql::LOCK_CARTS))
                    .await
                    .map_err(fail)?;
            }
            get_carts(c, tenant, ids, recent).await
        };
        let remembered = async {
            let Some(key) = key else { return Ok(None) };
            let stmt = c.prepare_cached(sql::GET_KEY).await.map_err(fail)?;
            c.query_opt(&stmt, &[&tenant.as_str(), &key])
                .instrument(traced::statement(sql::GET_KEY))
                .await
                .map_err(fail)
        };
        // The statements go out before any answer comes back: one round trip.
        let (carts, key_row) = tokio::try_join!(carts, remembered)?;
        let remembered = match key_row {
            Some(row) => Some(answer_of_key(c, tenant, &row, recent).await?),
            None => None,
        };
        let loaded = carts.iter().map(|k| k.cart.clone()).collect();
        self.loaded.extend(carts.into_iter().map(|kept| {
            let before = Before {
                kept,
                remembered: from_memory,
            };
            (before.kept.cart.id, before)
        }));
        Ok(Loaded {
            carts: loaded,
            remembered,
            unconfirmed: from_memory,
        })
    }

    async fn load_expired(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, Cart)>, Conflict> {
        if !self.in_tx {
            return Err(CartError::internal("load_expired needs a locked unit").into());
        }
        let c = self.client();
        let stmt = c.prepare_cached(sql::DUE_CARTS).await.map_err(fail)?;
        let rows = c
            .query(&stmt, &[&now, &(limit as i64)])
            .instrument(traced::statement(sql::DUE_CARTS))
            .await
            .map_err(fail)?;
        let mut due: BTreeMap<String, Vec<CartId>> = BTreeMap::new();
        for row in &rows {
            due.entry(row.try_get(0).map_err(fail)?)
                .or_default()
                .push(row.try_get(1).map_err(fail)?);
        }
        let mut out = Vec::new();
        for (tenant, ids) in due {
            let tenant = TenantId(tenant);
            for kept in get_carts(c, &tenant, &ids, &self.recent).await? {
                out.push((tenant.clone(), kept));
            }
        }
        let due = out
            .iter()
            .map(|(t, k)| (t.clone(), k.cart.clone()))
            .collect();
        self.loaded.extend(out.into_iter().map(|(_, kept)| {
            let before = Before {
                kept,
                remembered: false,
            };
            (before.kept.cart.id, before)
        }));
        Ok(due)
    }

    async fn insert(
        &mut self,
        tenant: &TenantId,
        cart: &Cart,
        fingerprint: [u8; 32],
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, Conflict> {
        let c = self.client();
        let reference = (!cart.reference.is_empty()).then_some(cart.reference.as_str());
        let (key, key_fp) = match key {
            Some(k) => (Some(k.key.as_str()), Some(&k.fingerprint[..])),
            None => (None, None),
        };
        let lines = NewLines::all(cart);
        let size = encoded_len(cart);
        let (tenant_id, status, fingerprint) =
            (tenant.as_str(), cart.status.as_str(), &fingerprint[..]);
        let (head, stored) = (Json(head_of(cart)), stored_size(size));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &tenant_id,
            &cart.id,
            &status,
            &cart.customer_id,
            &reference,
            &cart.created_at,
            &cart.expires_at,
            &fingerprint,
            &head,
            &stored,
            &key,
            &key_fp,
        ];
        params.extend(lines.arrays());
        let stmt = c.prepare_cached(sql::INSERT_CART).await.map_err(fail)?;
        let row = c
            .query_one(&stmt, &params)
            .instrument(traced::statement(sql::INSERT_CART))
            .await
            .map_err(fail)?;
        if row.get::<_, i64>(0) == 1 {
            if !self.in_tx {
                self.recent.keep(tenant, cart.clone(), Some(size));
            }
            self.wrote(false);
            return Ok(Inserted::Created);
        }
        // The reference is taken: answer the cart that holds it.
        let stmt = c
            .prepare_cached(sql::GET_BY_REFERENCE)
            .await
            .map_err(fail)?;
        let row = c
            .query_opt(&stmt, &[&tenant.as_str(), &reference])
            .instrument(traced::statement(sql::GET_BY_REFERENCE))
            .await
            .map_err(fail)?
            .ok_or(Conflict::Retry)?; // deleted in between: try again
        let id: CartId = row.try_get(0).map_err(fail)?;
        let holder = get_carts(c, tenant, &[id], &self.recent)
            .await?
            .pop()
            .map(|kept| kept.cart.clone())
            .ok_or(Conflict::Retry)?;
        Ok(Inserted::ReferenceTaken {
            cart: Box::new(holder),
            fingerprint: row.try_get(1).map_err(fail)?,
        })
    }

    async fn save(
        &mut self,
        tenant: &TenantId,
        write: &Write<'_>,
        key: Option<KeyRecord<'_>>,
    ) -> Result<(), Conflict> {
        let cart = write.cart;
        let Before { kept, remembered } = self
            .loaded
            .remove(&cart.id)
            .ok_or_else(|| CartError::internal("a unit of work saved a cart it had not loaded"))?;
        let before = &kept.cart;
        if before.version != cart.version - 1 {
            // Not the version this write would follow: it cannot go ahead.
            return Err(Conflict::Raced);
        }
        let c = self.client();
        let (key, fingerprint, answer_id, answer_version) = match key {
            Some(k) => (
                Some(k.key.key.as_str()),
                Some(&k.key.fingerprint[..]),
                Some(k.response.id),
                Some(k.response.version),
            ),
            None => (None, None, None, None),
        };
        let (cb_id, cb_url, cb_payload) = match &write.callback {
            Some(due) => (
                Some(Uuid::new_v4()),
                Some(due.url.as_str()),
                Some(Json(&due.payload)),
            ),
            None => (None, None, None),
        };
        debug_assert_eq!(cart.updated_at, write.at, "events keep one time per change");
        let head = head_changed(before, cart).then(|| Json(head_of(cart)));
        let (ended, lines) = changed_lines(before, cart);
        let size = encoded_len(cart);
        let stored = stored_size(size);
        let final_at = cart.status.is_final().then_some(write.at);
        let (tenant_id, status) = (tenant.as_str(), cart.status.as_str());
        let (event, previous) = (
            write.change.event.as_str(),
            write.change.previous_status.as_str(),
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &tenant_id,
            &cart.id,
            &cart.version,
            &status,
            &cart.customer_id,
            &write.at,
            &cart.expires_at,
            &head,
            &stored,
            &event,
            &previous,
            &key,
            &fingerprint,
            &answer_id,
            &answer_version,
            &cb_id,
            &cb_url,
            &cb_payload,
        ];
        // At most one line state written and one ended (most changes):
        // single values, so that Postgres keeps a generic plan of the write.
        let (ended_sku, first) = (ended.first(), lines.first());
        let one_line = lines.skus.len() <= 1 && ended.len() <= 1;
        let (full, plain) = if one_line {
            params.push(&ended_sku);
            params.extend(first.params());
            (sql::WRITE_CART_ONE_LINE, sql::WRITE_CART_ONE_LINE_PLAIN)
        } else {
            params.push(&ended);
            params.extend(lines.arrays());
            (sql::WRITE_CART, sql::WRITE_CART_PLAIN)
        };
        params.push(&final_at);
        let (query, stmt) = if head.is_none() && key.is_none() && cb_url.is_none() {
            (plain, statements::prepare_shorter(c, full, plain).await)
        } else {
            (full, c.prepare_cached(full).await)
        };
        let stmt = stmt.map_err(fail)?;
        let row = c
            .query_one(&stmt, &params)
            .instrument(traced::statement(query))
            .await
            .map_err(fail)?;
        if row.get::<_, i64>(0) != 1 {
            self.recent.forget(cart.id);
            return Err(if remembered {
                Conflict::Stale
            } else {
                Conflict::Raced
            });
        }
        if self.in_tx {
            // Stored only if the transaction commits.
            self.recent.forget(cart.id);
        } else {
            self.recent.keep(tenant, cart.clone(), Some(size));
        }
        self.wrote(write.callback.is_some());
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Conflict> {
        if self.in_tx {
            self.client().batch_execute("COMMIT").await.map_err(fail)?;
            self.in_tx = false;
            if self.wrote {
                self.committed.poke();
            }
            if self.wrote_callback {
                self.callbacks.written();
            }
        }
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) {
        if self.in_tx && self.client().batch_execute("ROLLBACK").await.is_ok() {
            self.in_tx = false;
        }
        // Otherwise Drop takes the connection out of the pool.
    }
}
