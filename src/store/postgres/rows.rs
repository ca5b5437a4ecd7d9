//! Between carts and rows. A cart is stored as its row in `carts` (what
//! changes with every version), its head (the cart without its lines,
//! JSON) and its lines, heads and lines with a row per state and the
//! versions of the cart each belongs to (see migration V6). Reads answer
//! rows of four kinds in one layout (see `sql`); this module puts carts and
//! events together again, and turns a change into the states it ends and
//! adds.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::{
    Row,
    types::{Json, ToSql},
};

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

/// Whether a change touched the head (anything but what every version
/// changes: version, status, times, which the cart row and events keep).
pub(super) fn head_changed(before: &Cart, after: &Cart) -> bool {
    // Every field named (no `..`): a field added to Cart must be sorted
    // here into the head or not, or this does not compile.
    let Cart {
        id,
        customer_id,
        reference,
        currency,
        country,
        channel,
        description,
        metadata,
        confirmation_type,
        callback_url,
        callback_cancel_url,
        created_at,
        merged_into_cart_id,
        cancel_reason,
        status: _,
        items: _,
        version: _,
        updated_at: _,
        expires_at: _,
    } = before;
    *id != after.id
        || *customer_id != after.customer_id
        || *reference != after.reference
        || *currency != after.currency
        || *country != after.country
        || *channel != after.channel
        || *description != after.description
        || *metadata != after.metadata
        || *confirmation_type != after.confirmation_type
        || *callback_url != after.callback_url
        || *callback_cancel_url != after.callback_cancel_url
        || *created_at != after.created_at
        || *merged_into_cart_id != after.merged_into_cart_id
        || *cancel_reason != after.cancel_reason
}

/// The cart without its lines, as `carts.doc` and `cart_events.cart` keep it.
pub(super) fn head_of(c: &Cart) -> Cart {
    // Every field but the lines, spelled out: a field added to Cart must
    // be added here (the compiler says so) or it would not be stored.
    Cart {
        id: c.id,
        customer_id: c.customer_id.clone(),
        reference: c.reference.clone(),
        currency: c.currency,
        country: c.country,
        channel: c.channel.clone(),
        description: c.description.clone(),
        metadata: c.metadata.clone(),
        confirmation_type: c.confirmation_type,
        callback_url: c.callback_url.clone(),
        callback_cancel_url: c.callback_cancel_url.clone(),
        status: c.status,
        items: Vec::new(),
        version: c.version,
        created_at: c.created_at,
        updated_at: c.updated_at,
        expires_at: c.expires_at,
        merged_into_cart_id: c.merged_into_cart_id,
        cancel_reason: c.cancel_reason.clone(),
    }
}

/// New line states as the parallel arrays the write statements take.
#[derive(Default)]
pub(super) struct NewLines<'a> {
    pub skus: Vec<&'a str>,
    /// Where a line of a new SKU goes; a line that stays keeps its place.
    pub positions: Vec<i64>,
    pub names: Vec<&'a str>,
    pub quantities: Vec<i32>,
    pub unit_prices: Vec<Decimal>,
    pub list_prices: Vec<Decimal>,
    pub attributes: Vec<Option<Json<&'a BTreeMap<String, String>>>>,
}

/// Places of new SKUs: after every line of earlier versions (a version's
/// new lines number fewer than this).
const PLACES_PER_VERSION: i64 = 1 << 16;

impl<'a> NewLines<'a> {
    fn push(&mut self, version: i64, l: &'a LineItem) {
        let place = version * PLACES_PER_VERSION + self.skus.len() as i64;
        self.skus.push(&l.sku);
        self.positions.push(place);
        self.names.push(&l.name);
        self.quantities.push(l.quantity);
        self.unit_prices.push(l.unit_price);
        self.list_prices.push(l.list_price);
        self.attributes
            .push((!l.attributes.is_empty()).then_some(Json(&l.attributes)));
    }

    /// Every line of a new cart.
    pub(super) fn all(cart: &'a Cart) -> NewLines<'a> {
        let mut new = NewLines::default();
        for l in &cart.items {
            new.push(cart.version, l);
        }
        new
    }

    /// The lines as the seven array parameters of the write statements.
    pub(super) fn arrays(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.skus,
            &self.positions,
            &self.names,
            &self.quantities,
            &self.unit_prices,
            &self.list_prices,
            &self.attributes,
        ]
    }

    /// The first line (NULLs when there is none) as the seven single
    /// values of `WRITE_CART_ONE_LINE`.
    pub(super) fn first(&self) -> FirstLine<'a> {
        FirstLine {
            sku: self.skus.first().copied(),
            position: self.positions.first().copied(),
            name: self.names.first().copied(),
            quantity: self.quantities.first().copied(),
            unit_price: self.unit_prices.first().copied(),
            list_price: self.list_prices.first().copied(),
            attributes: self
                .attributes
                .first()
                .and_then(|a| a.as_ref().map(|Json(a)| Json(*a))),
        }
    }
}

/// One new line state as single values (see [`NewLines::first`]).
pub(super) struct FirstLine<'a> {
    sku: Option<&'a str>,
    position: Option<i64>,
    name: Option<&'a str>,
    quantity: Option<i32>,
    unit_price: Option<Decimal>,
    list_price: Option<Decimal>,
    attributes: Option<Json<&'a BTreeMap<String, String>>>,
}

impl FirstLine<'_> {
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.sku,
            &self.position,
            &self.name,
            &self.quantity,
            &self.unit_price,
            &self.list_price,
            &self.attributes,
        ]
    }
}

/// What a change does to the lines: the SKUs whose current rows end, and
/// the new states (of changed and new SKUs). Lines that stay as they were
/// are not written.
pub(super) fn changed_lines<'a>(before: &'a Cart, after: &'a Cart) -> (Vec<&'a str>, NewLines<'a>) {
    let mut ended = Vec::new();
    let mut new = NewLines::default();
    // A line keeps its place unless a line before it was removed: looked
    // up there first, by SKU only when it moved.
    let mut by_sku: Option<HashMap<&str, &Arc<LineItem>>> = None;
    let mut found = 0;
    for (at, l) in after.items.iter().enumerate() {
        let old = match before.items.get(at).filter(|o| o.sku == l.sku) {
            Some(o) => Some(o),
            None => by_sku
                .get_or_insert_with(|| before.items.iter().map(|o| (o.sku.as_str(), o)).collect())
                .get(l.sku.as_str())
                .copied(),
        };
        match old {
            // Untouched lines are the before-state's own (shared).
            Some(o) if Arc::ptr_eq(o, l) || o == l => found += 1,
            Some(_) => {
                found += 1;
                ended.push(l.sku.as_str());
                new.push(after.version, l);
            }
            None => new.push(after.version, l),
        }
    }
    if found < before.items.len() {
        // Some SKUs were removed.
        let kept: HashSet<&str> = after.items.iter().map(|l| l.sku.as_str()).collect();
        ended.extend(
            before
                .items
                .iter()
                .map(|l| l.sku.as_str())
                .filter(|s| !kept.contains(s)),
        );
    }
    (ended, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, q: i32) -> LineItem {
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

    fn cart(version: i64, items: Vec<LineItem>) -> Cart {
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
    fn only_the_lines_a_change_touches_are_written() {
        let before = cart(3, vec![line("a", 1), line("b", 1), line("c", 1)]);
        let after = cart(4, vec![line("a", 1), line("b", 2), line("d", 1)]);
        let (ended, new) = changed_lines(&before, &after);
        assert_eq!(ended, vec!["b", "c"]);
        assert_eq!(new.skus, vec!["b", "d"]);
        assert_eq!(new.quantities, vec![2, 1]);
        assert!(new.positions.iter().all(|p| *p >= 4 * PLACES_PER_VERSION));
    }

    #[test]
    fn an_unchanged_cart_writes_no_line() {
        let before = cart(3, vec![line("a", 1)]);
        let mut after = before.clone();
        after.version = 4;
        let (ended, new) = changed_lines(&before, &after);
        assert!(ended.is_empty() && new.skus.is_empty());
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

    #[test]
    fn only_a_change_of_the_details_is_a_change_of_the_head() {
        let before = cart(1, vec![line("a", 1)]);
        let mut after = cart(2, vec![line("a", 2)]);
        after.id = before.id;
        after.created_at = before.created_at;
        after.updated_at = chrono::Utc::now();
        assert!(!head_changed(&before, &after));
        after.description = "gift".into();
        assert!(head_changed(&before, &after));
    }
}
