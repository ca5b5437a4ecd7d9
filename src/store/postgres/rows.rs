//! Between carts and rows: a cart is stored as its head (the cart without
//! its lines, JSON in `carts.doc` and `cart_events.cart`) and its lines
//! (`cart_lines`, a row per state of a line with the versions it belongs
//! to). Reads answer heads and line rows from one snapshot (see `sql`);
//! this module puts carts together again, and turns a change into the
//! line rows it ends and adds.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use tokio_postgres::{Row, types::Json};

use super::errors::pg;
use crate::domain::{
    Cart, CartError, CartEvent, CartId, CartStatus, EventType, LineItem, TenantId,
};

/// A state of a line, with the versions of its cart it belongs to.
struct LineState {
    valid_from: i64,
    /// None: current.
    valid_to: Option<i64>,
    position: i64,
    item: LineItem,
}

impl LineState {
    fn at(&self, version: i64) -> bool {
        self.valid_from <= version && self.valid_to.is_none_or(|to| to > version)
    }
}

/// Reads the line columns (`sql::line_columns!`) starting at `at`; None on
/// a row that is not a line.
fn line_at(row: &Row, at: usize) -> Result<Option<LineState>, CartError> {
    let Some(sku) = row.try_get::<_, Option<String>>(at).map_err(pg)? else {
        return Ok(None);
    };
    let attributes: Option<Json<BTreeMap<String, String>>> = row.try_get(at + 8).map_err(pg)?;
    Ok(Some(LineState {
        valid_from: row.try_get(at + 1).map_err(pg)?,
        valid_to: row.try_get(at + 2).map_err(pg)?,
        position: row.try_get(at + 3).map_err(pg)?,
        item: LineItem {
            sku,
            name: row.try_get(at + 4).map_err(pg)?,
            quantity: row.try_get(at + 5).map_err(pg)?,
            unit_price: row.try_get(at + 6).map_err(pg)?,
            list_price: row.try_get(at + 7).map_err(pg)?,
            attributes: attributes.map(|Json(a)| a).unwrap_or_default(),
        },
    }))
}

fn head_at(row: &Row, at: usize) -> Result<Option<Cart>, CartError> {
    // Straight into Cart: no serde_json::Value tree in between.
    let head: Option<Json<Cart>> = row.try_get(at).map_err(pg)?;
    Ok(head.map(|Json(c)| c))
}

/// Line states read for some carts, by cart.
#[derive(Default)]
struct Lines(HashMap<CartId, Vec<LineState>>);

impl Lines {
    fn add(&mut self, cart: CartId, line: LineState) {
        self.0.entry(cart).or_default().push(line);
    }

    /// Gives `cart` its lines at its version, in the order first added. A
    /// head that still holds its lines (an event written before lines had
    /// their own table) keeps them.
    fn fill(&self, cart: &mut Cart) {
        if !cart.items.is_empty() {
            return;
        }
        let Some(states) = self.0.get(&cart.id) else {
            return;
        };
        let mut at: Vec<&LineState> = states.iter().filter(|l| l.at(cart.version)).collect();
        at.sort_by_key(|l| l.position);
        cart.items = at.into_iter().map(|l| l.item.clone()).collect();
    }
}

/// Carts from the rows of `GET_CARTS` or a `list_carts!` query (id, head,
/// line); `None` for a cart whose head the query withheld. In no order.
pub(super) fn carts(rows: &[Row]) -> Result<Vec<Option<Cart>>, CartError> {
    let mut heads = Vec::new();
    let mut lines = Lines::default();
    for row in rows {
        let id: CartId = row.try_get(0).map_err(pg)?;
        match line_at(row, 2)? {
            Some(line) => lines.add(id, line),
            None => heads.push(head_at(row, 1)?),
        }
    }
    Ok(heads
        .into_iter()
        .map(|head| {
            head.map(|mut cart| {
                lines.fill(&mut cart);
                cart
            })
        })
        .collect())
}

/// Events from the rows of an `events!` query, in sequence order.
pub(super) fn events(rows: &[Row]) -> Result<Vec<CartEvent>, CartError> {
    let unknown =
        |what: &str, v: &str| CartError::internal(format!("unknown {what} {v:?} in cart_events"));
    let mut events = Vec::new();
    let mut lines = Lines::default();
    for row in rows {
        let cart: CartId = row.try_get(6).map_err(pg)?;
        if let Some(line) = line_at(row, 7)? {
            lines.add(cart, line);
            continue;
        }
        let kind: &str = row.try_get(2).map_err(pg)?;
        let previous: Option<&str> = row.try_get(3).map_err(pg)?;
        events.push(CartEvent {
            sequence: row.try_get(0).map_err(pg)?,
            tenant: TenantId(row.try_get(1).map_err(pg)?),
            event_type: EventType::parse(kind).ok_or_else(|| unknown("event type", kind))?,
            previous_status: previous
                .map(|p| CartStatus::parse(p).ok_or_else(|| unknown("status", p)))
                .transpose()?,
            occurred_at: row.try_get(4).map_err(pg)?,
            cart: head_at(row, 5)?
                .ok_or_else(|| CartError::internal("an event without its cart"))?,
        });
    }
    events.sort_by_key(|e| e.sequence);
    for e in &mut events {
        lines.fill(&mut e.cart);
    }
    Ok(events)
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
}

/// What a change does to the lines: the SKUs whose current rows end, and
/// the new states (of changed and new SKUs). Lines that stay as they were
/// are not written.
pub(super) fn changed_lines<'a>(before: &'a Cart, after: &'a Cart) -> (Vec<&'a str>, NewLines<'a>) {
    let old: HashMap<&str, &LineItem> = before.items.iter().map(|l| (l.sku.as_str(), l)).collect();
    let mut ended = Vec::new();
    let mut new = NewLines::default();
    for l in &after.items {
        match old.get(l.sku.as_str()) {
            Some(o) if *o == l => {}
            Some(_) => {
                ended.push(l.sku.as_str());
                new.push(after.version, l);
            }
            None => new.push(after.version, l),
        }
    }
    let kept: std::collections::HashSet<&str> =
        after.items.iter().map(|l| l.sku.as_str()).collect();
    ended.extend(
        before
            .items
            .iter()
            .map(|l| l.sku.as_str())
            .filter(|s| !kept.contains(s)),
    );
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
        c.items = items;
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
    fn a_cart_at_a_version_has_the_lines_of_that_version_in_order() {
        let mut lines = Lines::default();
        let mut c = cart(2, Vec::new());
        let state = |from, to, position, q| LineState {
            valid_from: from,
            valid_to: to,
            position,
            item: line(&format!("s{position}"), q),
        };
        lines.add(c.id, state(1, Some(2), 5, 1));
        lines.add(c.id, state(2, None, 5, 2));
        lines.add(c.id, state(1, None, 1, 1));
        lines.add(c.id, state(3, None, 9, 1));
        lines.fill(&mut c);
        let got: Vec<(String, i32)> = c
            .items
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect();
        assert_eq!(got, vec![("s1".into(), 1), ("s5".into(), 2)]);
    }
}
