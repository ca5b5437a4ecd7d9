//! Between carts and rows. A cart is stored as its row in `carts` (what
//! changes with every version), its head (the cart without its lines,
//! JSON) and its lines, heads and lines with a row per state and the
//! versions of the cart each belongs to (see migration V6). Reads answer
//! rows of four kinds in one layout (see `sql`); this module puts carts and
//! events together again (`changes` turns a change into the states it ends
//! and adds).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::{Row, types::Json};

use super::errors::pg;
use crate::domain::{
    Cart, CartError, CartEvent, CartId, CartStatus, EventType, LineItem, TenantId,
};

// The columns of the row layout of `sql`.
const KIND: usize = 0;
const CART: usize = 1;
const A: usize = 2;
const B: usize = 3;
const C: usize = 4;
const T1: usize = 5;
const T2: usize = 6;
const T3: usize = 7;
const T4: usize = 8;
const TS1: usize = 9;
const TS2: usize = 10;
const J: usize = 11;
const I: usize = 12;
const N1: usize = 13;
const N2: usize = 14;

/// The versions of its cart a state of a head or a line belongs to.
struct Span {
    from: i64,
    /// None: current.
    to: Option<i64>,
}

impl Span {
    fn read(row: &Row) -> Result<Span, CartError> {
        Ok(Span {
            from: row.try_get(A).map_err(pg)?,
            to: row.try_get(B).map_err(pg)?,
        })
    }

    fn holds(&self, version: i64) -> bool {
        self.from <= version && self.to.is_none_or(|to| to > version)
    }
}

/// What changes with every version, read beside a head.
struct Stamp {
    version: i64,
    status: CartStatus,
    updated_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

fn status(s: &str) -> Result<CartStatus, CartError> {
    CartStatus::parse(s).ok_or_else(|| CartError::internal(format!("unknown status {s:?} stored")))
}

/// Head and line states read for some carts, by cart.
#[derive(Default)]
struct States {
    heads: HashMap<CartId, Vec<(Span, Cart)>>,
    lines: HashMap<CartId, Vec<(Span, i64, Arc<LineItem>)>>,
}

impl States {
    /// Takes a row of kind 1 or 2; false for another kind.
    fn take(&mut self, kind: i32, cart: CartId, row: &Row) -> Result<bool, CartError> {
        match kind {
            1 => {
                let Json(head): Json<Cart> = row.try_get(J).map_err(pg)?;
                self.heads
                    .entry(cart)
                    .or_default()
                    .push((Span::read(row)?, head));
            }
            2 => {
                let attributes: Option<Json<BTreeMap<String, String>>> =
                    row.try_get(J).map_err(pg)?;
                let item = Arc::new(LineItem {
                    sku: row.try_get(T1).map_err(pg)?,
                    name: row.try_get(T2).map_err(pg)?,
                    quantity: row.try_get(I).map_err(pg)?,
                    unit_price: row.try_get::<_, Decimal>(N1).map_err(pg)?,
                    list_price: row.try_get::<_, Decimal>(N2).map_err(pg)?,
                    attributes: attributes.map(|Json(a)| a).unwrap_or_default(),
                    memo: Default::default(),
                });
                let position = row.try_get(C).map_err(pg)?;
                self.lines
                    .entry(cart)
                    .or_default()
                    .push((Span::read(row)?, position, item));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The cart `id` as it stood at `stamp.version`: its head then, with
    /// the stamp, and its lines then in the order first added.
    fn cart_at(&self, id: CartId, stamp: Stamp) -> Result<Cart, CartError> {
        let mut cart = self
            .heads
            .get(&id)
            .and_then(|hs| hs.iter().find(|(span, _)| span.holds(stamp.version)))
            .map(|(_, head)| head.clone())
            .ok_or_else(|| {
                CartError::internal(format!("no head of cart {id} at version {}", stamp.version))
            })?;
        cart.version = stamp.version;
        cart.status = stamp.status;
        cart.updated_at = stamp.updated_at;
        cart.expires_at = stamp.expires_at;
        if let Some(lines) = self.lines.get(&id) {
            let mut at: Vec<_> = lines
                .iter()
                .filter(|(span, ..)| span.holds(stamp.version))
                .collect();
            at.sort_by_key(|(_, position, _)| *position);
            cart.items = at.into_iter().map(|(.., item)| item.clone()).collect();
        }
        Ok(cart)
    }
}

/// Each cart a cart query answered with its stamp, `None` for a cart
/// withheld (past a page's budget).
type Stamped = Vec<(CartId, Option<Stamp>)>;

/// The kind-0 rows of a cart query, with the head and line states it
/// answered.
fn stamped(rows: &[Row]) -> Result<(Stamped, States), CartError> {
    let mut found = Vec::new();
    let mut states = States::default();
    for row in rows {
        let kind: i32 = row.try_get(KIND).map_err(pg)?;
        let id: CartId = row.try_get(CART).map_err(pg)?;
        if states.take(kind, id, row)? {
            continue;
        }
        let kept: i64 = row.try_get(A).map_err(pg)?;
        let stamp = Stamp {
            version: row.try_get(B).map_err(pg)?,
            status: status(row.try_get(T4).map_err(pg)?)?,
            updated_at: row.try_get(TS1).map_err(pg)?,
            expires_at: row.try_get(TS2).map_err(pg)?,
        };
        found.push((id, (kept == 1).then_some(stamp)));
    }
    Ok((found, states))
}

/// Carts from the rows of a `list_carts!` query; `None` for a cart the
/// query withheld (past a page's budget). In no order.
pub(super) fn carts(rows: &[Row]) -> Result<Vec<Option<Cart>>, CartError> {
    let (found, states) = stamped(rows)?;
    found
        .into_iter()
        .map(|(id, stamp)| stamp.map(|s| states.cart_at(id, s)).transpose())
        .collect()
}

/// The stored versions of the carts the rows of `STAMP_CART(S)` answered.
pub(super) fn versions(rows: &[Row]) -> Result<Vec<(CartId, i64)>, CartError> {
    let (found, _) = stamped(rows)?;
    Ok(found
        .into_iter()
        .filter_map(|(id, stamp)| stamp.map(|s| (id, s.version)))
        .collect())
}

/// A cart `GET_CART(S)` answered: read, or at the version the caller said it
/// knows (then only its stamp was sent).
pub(super) enum Current {
    Read(Box<Cart>),
    AsKnown(CartId),
}

/// Carts from the rows of `GET_CART(S)`, asked with `known` (the version
/// of a cart the caller has) as its `$3`. In no order.
pub(super) fn current(
    rows: &[Row],
    known: impl Fn(CartId) -> Option<i64>,
) -> Result<Vec<Current>, CartError> {
    let (found, states) = stamped(rows)?;
    found
        .into_iter()
        .map(|(id, stamp)| {
            let stamp =
                stamp.ok_or_else(|| CartError::internal("a cart read without its stamp"))?;
            if known(id) == Some(stamp.version) {
                return Ok(Current::AsKnown(id));
            }
            states
                .cart_at(id, stamp)
                .map(|c| Current::Read(Box::new(c)))
        })
        .collect()
}

/// The kind of the row of an `events!` query's resume bound.
const BOUND: i32 = 4;

/// The resume bound an `events!` query answered (see `sql`): `Err` when it
/// asked for none; `Ok(None)` when the bound was NULL.
pub(super) fn bound(rows: &[Row]) -> Result<Option<i64>, CartError> {
    for row in rows {
        if row.try_get::<_, i32>(KIND).map_err(pg)? == BOUND {
            return row.try_get(A).map_err(pg);
        }
    }
    Err(CartError::internal(
        "an event read without its resume bound",
    ))
}

/// An event row before its cart is put together.
struct Event {
    sequence: i64,
    tenant: TenantId,
    event_type: EventType,
    previous_status: Option<CartStatus>,
    whole: Option<Cart>,
}

/// Events from the rows of an `events!` query, in sequence order.
pub(super) fn events(rows: &[Row]) -> Result<Vec<CartEvent>, CartError> {
    let mut found = Vec::new();
    let mut states = States::default();
    for row in rows {
        let kind: i32 = row.try_get(KIND).map_err(pg)?;
        if kind == BOUND {
            continue;
        }
        let id: CartId = row.try_get(CART).map_err(pg)?;
        if states.take(kind, id, row)? {
            continue;
        }
        let kind: &str = row.try_get(T2).map_err(pg)?;
        let previous: Option<&str> = row.try_get(T3).map_err(pg)?;
        let whole: Option<Json<Cart>> = row.try_get(J).map_err(pg)?;
        let stamp = Stamp {
            version: row.try_get(B).map_err(pg)?,
            status: status(row.try_get(T4).map_err(pg)?)?,
            updated_at: row.try_get(TS1).map_err(pg)?,
            expires_at: row.try_get(TS2).map_err(pg)?,
        };
        let event = Event {
            sequence: row.try_get(A).map_err(pg)?,
            tenant: TenantId(row.try_get(T1).map_err(pg)?),
            event_type: EventType::parse(kind)
                .ok_or_else(|| CartError::internal(format!("unknown event type {kind:?}")))?,
            previous_status: previous.map(status).transpose()?,
            whole: whole.map(|Json(c)| c),
        };
        found.push((event, id, stamp));
    }
    let mut events = found
        .into_iter()
        .map(|(e, id, stamp)| {
            let occurred_at = stamp.updated_at;
            Ok(CartEvent {
                sequence: e.sequence,
                tenant: e.tenant,
                event_type: e.event_type,
                previous_status: e.previous_status,
                occurred_at,
                // Events written before heads and lines had tables hold their cart.
                cart: match e.whole {
                    Some(cart) => cart,
                    None => states.cart_at(id, stamp)?,
                },
            })
        })
        .collect::<Result<Vec<_>, CartError>>()?;
    events.sort_by_key(|e| e.sequence);
    Ok(events)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store::postgres) fn line(sku: &str, q: i32) -> LineItem {
        LineItem {
            sku: sku.into(),
            name: sku.into(),
            quantity: q,
            unit_price: Decimal::ONE,
            list_price: Decimal::ONE,
            memo: Default::default(),
            attributes: BTreeMap::new(),
        }
    }

    pub(in crate::store::postgres) fn cart(version: i64, items: Vec<LineItem>) -> Cart {
        let mut c = crate::domain::Cart::create(
            uuid::Uuid::new_v4(),
            crate::domain::NewCart {
                customer_id: String::new(),
                reference: String::new(),
                currency: crate::domain::Currency::parse("USD").unwrap(),
                country: None,
                channel: "default".into(),
                description: String::new(),
                metadata: BTreeMap::new(),
                confirmation_type: Default::default(),
                callback_url: String::new(),
                callback_cancel_url: String::new(),
                items: Vec::new(),
            },
            chrono::Utc::now(),
            &Default::default(),
        )
        .unwrap();
        c.version = version;
        c.items = items.into_iter().map(Arc::new).collect();
        c
    }

    #[test]
    fn a_cart_at_a_version_has_its_head_and_lines_of_that_version_in_order() {
        let mut states = States::default();
        let mut head = cart(1, Vec::new());
        let id = head.id;
        head.description = "old".into();
        let mut newer = head.clone();
        newer.description = "new".into();
        let span = |from, to| Span { from, to };
        states
            .heads
            .entry(id)
            .or_default()
            .push((span(1, Some(2)), head.clone()));
        states
            .heads
            .entry(id)
            .or_default()
            .push((span(2, None), newer));
        let lines = states.lines.entry(id).or_default();
        lines.push((span(1, Some(2)), 5, Arc::new(line("s5", 1))));
        lines.push((span(2, None), 5, Arc::new(line("s5", 2))));
        lines.push((span(1, None), 1, Arc::new(line("s1", 1))));
        lines.push((span(3, None), 9, Arc::new(line("s9", 1))));
        let stamp = |version| Stamp {
            version,
            status: CartStatus::Active,
            updated_at: head.created_at,
            expires_at: None,
        };
        let at2 = states.cart_at(id, stamp(2)).unwrap();
        let got: Vec<(&str, i32)> = at2
            .items
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect();
        assert_eq!(got, vec![("s1", 1), ("s5", 2)]);
        assert_eq!((at2.version, at2.description.as_str()), (2, "new"));
        let at1 = states.cart_at(id, stamp(1)).unwrap();
        assert_eq!(at1.description, "old");
        assert_eq!(at1.items.len(), 2);
    }
}
