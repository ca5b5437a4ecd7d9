//! The floor's state (its pool, the echo's cart, the carts it remembers)
//! and reading a cart: by its version stamp when remembered, else whole.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use cart_service::{
    domain::{Cart, CartStatus, LineItem},
    proto,
    store::postgres::statements::{GET_CART, STAMP_CART},
};
use deadpool_postgres::Pool;
use tokio_postgres::{Row, types::Json};
use tonic::Status;
use uuid::Uuid;

/// Every cart is the bench's tenant's.
pub(crate) const TENANT: &str = "default";

pub(crate) struct Floor {
    pub(crate) pool: Pool,
    pub(crate) echo: proto::Cart,
    /// The carts last read or written, by id.
    pub(crate) known: Mutex<HashMap<Uuid, Cart>>,
}

pub(crate) fn internal(e: impl std::fmt::Debug) -> Status {
    Status::internal(format!("{e:?}"))
}

/// A cart as it stands from GET_CART's rows (kinds 0, 1, 2 of its
/// layout); `known`: the cart as remembered, when GET_CART was told its
/// version.
fn cart_of(rows: &[Row], known: Option<Cart>) -> Result<Option<Cart>, Status> {
    let (mut cart, mut lines) = (None, Vec::new());
    let mut stamp = None;
    for row in rows {
        match row.get::<_, i32>(0) {
            0 => {
                stamp = Some((
                    row.get::<_, i64>(3),
                    row.get::<_, String>(8),
                    row.get(9),
                    row.get(10),
                ))
            }
            1 => cart = Some(row.get::<_, Json<Cart>>(11).0),
            _ => {
                let attributes: Option<Json<BTreeMap<String, String>>> = row.get(11);
                lines.push((
                    row.get::<_, i64>(4),
                    LineItem {
                        sku: row.get(5),
                        name: row.get(6),
                        quantity: row.get(12),
                        unit_price: row.get(13),
                        list_price: row.get(14),
                        attributes: attributes.map(|a| a.0).unwrap_or_default(),
                        memo: Default::default(),
                    },
                ))
            }
        }
    }
    let Some((version, status, updated_at, expires_at)) = stamp else {
        return Ok(None);
    };
    let mut cart = match (cart, known) {
        (Some(mut cart), _) => {
            lines.sort_by_key(|(position, _)| *position);
            cart.items = lines.into_iter().map(|(_, l)| Arc::new(l)).collect();
            cart
        }
        (None, Some(known)) if known.version == version => known,
        _ => return Err(internal("a cart without its head")),
    };
    cart.version = version;
    cart.status = CartStatus::parse(&status).ok_or_else(|| internal("status"))?;
    cart.updated_at = updated_at;
    cart.expires_at = expires_at;
    Ok(Some(cart))
}

impl Floor {
    pub(crate) async fn read(&self, id: Uuid) -> Result<(deadpool_postgres::Object, Cart), Status> {
        let c = self.pool.get().await.map_err(internal)?;
        let known = self.known.lock().unwrap().get(&id).cloned();
        if let Some(known) = &known {
            let stmt = c.prepare_cached(STAMP_CART).await.map_err(internal)?;
            let rows = c.query(&stmt, &[&TENANT, &id]).await.map_err(internal)?;
            match rows.first() {
                Some(row) if row.get::<_, i64>(3) == known.version => {
                    return Ok((c, known.clone()));
                }
                Some(_) => {}
                None => return Err(Status::not_found("cart")),
            }
        }
        let stmt = c.prepare_cached(GET_CART).await.map_err(internal)?;
        let rows = c
            .query(&stmt, &[&TENANT, &id, &known.as_ref().map(|k| k.version)])
            .await
            .map_err(internal)?;
        let cart = cart_of(&rows, known)?.ok_or_else(|| Status::not_found("cart"))?;
        self.remember(&cart);
        Ok((c, cart))
    }

    pub(crate) fn remember(&self, cart: &Cart) {
        self.known.lock().unwrap().insert(cart.id, cart.clone());
    }
}
