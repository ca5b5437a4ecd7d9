//! Units of work on Postgres. `Optimistic`: statements on a pooled
//! connection with no transaction, so an uncontended change is two round
//! trips (read the cart and the key, pipelined; then ONE statement that
//! writes cart, event, key and callback on condition of the version read).
//! `Locked`: the same statements inside a transaction whose reads lock the
//! carts (`FOR UPDATE`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::types::Json;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{cart_at, errors::fail, feed::Committed, outbox::Wake, sql, traced};
use crate::{
    domain::{Cart, CartError, CartId, IdempotencyKey, TenantId},
    ports::{Conflict, Inserted, KeyRecord, Loaded, Remembered, UnitOfWork, Write},
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
}

impl PgUnit {
    pub(super) async fn begin(
        client: Object,
        locked: bool,
        committed: Arc<Committed>,
        callbacks: Wake,
    ) -> Result<PgUnit, CartError> {
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
        let c = self.client();
        let locked = self.in_tx;
        let carts = async {
            let (one, many) = if locked {
                (sql::LOCK_CART, sql::LOCK_CARTS)
            } else {
                (sql::GET_CART, sql::GET_CARTS)
            };
            let rows = match ids {
                [] => Vec::new(),
                [id] => {
                    let stmt = c.prepare_cached(one).await.map_err(fail)?;
                    c.query(&stmt, &[&tenant.as_str(), id])
                        .await
                        .map_err(fail)?
                }
                _ => {
                    let stmt = c.prepare_cached(many).await.map_err(fail)?;
                    c.query(&stmt, &[&tenant.as_str(), &ids])
                        .await
                        .map_err(fail)?
                }
            };
            rows.iter()
                .map(|r| cart_at(r, 0).map_err(Conflict::Failed))
                .collect::<Result<Vec<_>, _>>()
        };
        let remembered = async {
            let Some(key) = key else { return Ok(None) };
            let stmt = c.prepare_cached(sql::GET_KEY).await.map_err(fail)?;
            let Some(row) = c
                .query_opt(&stmt, &[&tenant.as_str(), &key])
                .instrument(traced::statement(sql::GET_KEY))
                .await
                .map_err(fail)?
            else {
                return Ok(None);
            };
            Ok::<_, Conflict>(Some(Remembered {
                fingerprint: row.try_get(0).map_err(fail)?,
                response: cart_at(&row, 1)?,
                recorded_at: row.try_get(2).map_err(fail)?,
            }))
        };
        // Both statements go out before either answer comes back: one round trip.
        let (carts, remembered) = tokio::try_join!(carts, remembered)?;
        Ok(Loaded { carts, remembered })
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
        rows.iter()
            .map(|row| {
                let tenant = TenantId(row.try_get(0).map_err(fail)?);
                Ok((tenant, cart_at(row, 1)?))
            })
            .collect()
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
        let stmt = c.prepare_cached(sql::INSERT_CART).await.map_err(fail)?;
        let row = c
            .query_one(
                &stmt,
                &[
                    &tenant.as_str(),
                    &cart.id,
                    &cart.status.as_str(),
                    &cart.customer_id,
                    &reference,
                    &cart.created_at,
                    &cart.expires_at,
                    &&fingerprint[..],
                    &Json(cart),
                    &key,
                    &key_fp,
                ],
            )
            .instrument(traced::statement(sql::INSERT_CART))
            .await
            .map_err(fail)?;
        if row.get::<_, i64>(0) == 1 {
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
        Ok(Inserted::ReferenceTaken {
            cart: Box::new(cart_at(&row, 0)?),
            fingerprint: row.try_get(1).map_err(fail)?,
        })
    }

    async fn save(
        &mut self,
        tenant: &TenantId,
        write: &Write<'_>,
        key: Option<KeyRecord<'_>>,
    ) -> Result<(), Conflict> {
        let c = self.client();
        let cart = write.cart;
        let (key, fingerprint, response) = match key {
            Some(k) => (
                Some(k.key.key.as_str()),
                Some(&k.key.fingerprint[..]),
                Some(Json(k.response)),
            ),
            None => (None, None, None),
        };
        let (cb_id, cb_url, cb_payload) = match &write.callback {
            Some(due) => (
                Some(Uuid::new_v4()),
                Some(due.url.as_str()),
                Some(Json(&due.payload)),
            ),
            None => (None, None, None),
        };
        let stmt = c.prepare_cached(sql::WRITE_CART).await.map_err(fail)?;
        let row = c
            .query_one(
                &stmt,
                &[
                    &tenant.as_str(),
                    &cart.id,
                    &cart.version,
                    &cart.status.as_str(),
                    &cart.customer_id,
                    &write.at,
                    &cart.expires_at,
                    &Json(cart),
                    &write.change.event.as_str(),
                    &write.change.previous_status.as_str(),
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
        if row.get::<_, i64>(0) != 1 {
            return Err(Conflict::Raced);
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
