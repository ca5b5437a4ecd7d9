//! The changes a caller can ask of one cart, checked for shape before any
//! cart is loaded. What depends on the cart (its currency, its lines, its
//! status) is checked when the command is applied.

use std::collections::BTreeMap;

use super::{
    country::Country,
    error::{FieldViolation, Reason, Violations},
    limits::{MAX_LINES, MAX_NAME_CHARS, MAX_QUANTITY},
    money::Amount,
    text::{check_map, check_sku, check_text},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Actor {
    Customer,
    Provider,
}

/// One line as a caller sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInput {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price: Amount,
    /// None means equal to the unit price.
    pub list_price: Option<Amount>,
    pub attributes: BTreeMap<String, String>,
}

impl ItemInput {
    /// Checks the shape of the `index`th item of field `list`; quantity 0 is
    /// allowed only where it means "remove" (SetItems).
    pub fn check(&self, list: &str, index: usize, allow_zero: bool, v: &mut Violations) {
        let f = |name: &str| format!("{list}[{index}].{name}");
        v.check(check_sku(&self.sku, &f("sku")));
        v.check(check_text(&self.name, &f("name"), MAX_NAME_CHARS));
        v.check(check_quantity(self.quantity, &f("quantity"), allow_zero));
        v.check(check_map(&self.attributes, &f("attributes")));
    }
}

pub fn check_quantity(q: i32, field: &str, allow_zero: bool) -> Result<(), FieldViolation> {
    let min = if allow_zero { 0 } else { 1 };
    if (min..=MAX_QUANTITY).contains(&q) {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            Reason::InvalidQuantity,
            format!("is {q}; it must be between {min} and {MAX_QUANTITY}"),
        ))
    }
}

/// Checks a list of items: at most one cart's worth of lines, each well formed.
pub fn check_items(items: &[ItemInput], list: &str, allow_zero: bool, v: &mut Violations) {
    if items.len() > MAX_LINES {
        v.push(FieldViolation::new(
            list,
            Reason::TooManyItems,
            format!("has {} items, more than {MAX_LINES}", items.len()),
        ));
        return;
    }
    for (i, item) in items.iter().enumerate() {
        item.check(list, i, allow_zero, v);
    }
}

/// Detail changes of UpdateCart; None leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    pub customer_id: Option<String>,
    /// Some(None) clears the country.
    pub country: Option<Option<Country>>,
    pub description: Option<String>,
    pub callback_url: Option<String>,
    pub callback_cancel_url: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Details {
    pub fn is_empty(&self) -> bool {
        *self == Details::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    AddItems(Vec<ItemInput>),
    SetItems(Vec<ItemInput>),
    RemoveItems(Vec<String>),
    Clear,
    Update(Details),
    Submit {
        expected_total: Option<Amount>,
    },
    Confirm(Actor),
    Cancel {
        actor: Option<Actor>,
        reason: String,
    },
    /// The expiry sweeper's change; never sent by callers.
    Expire,
}
