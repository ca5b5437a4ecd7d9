//! What a change writes: whether it touched the cart's head, and the line
//! states it ends and adds (see `rows` for the layout they are read back in).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use rust_decimal::Decimal;
use tokio_postgres::types::{Json, ToSql};

use crate::domain::{Cart, LineItem};

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
        let old = match before
            .items
            .get(at)
            .filter(|o| Arc::ptr_eq(o, l) || o.sku == l.sku)
        {
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
    use crate::store::postgres::rows::tests::{cart, line};

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
