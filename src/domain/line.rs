//! A cart's line: one SKU, its quantity and prices. Lines are shared
//! between copies of a cart (`Arc<LineItem>`) and never changed once shared.

use std::{collections::BTreeMap, sync::OnceLock};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::Currency;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price: Decimal,
    pub list_price: Decimal,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(skip)]
    pub memo: LineMemo,
}

/// What is derived from a line once and kept beside it. A line is never
/// changed once shared: a change puts a new `Arc<LineItem>` in its place,
/// so what was derived stays true for the line's life, and a 300-line cart
/// changed in one line derives one line again, not 300. A clone of a line
/// starts with an empty memo (it may be changed); comparing lines ignores it.
#[derive(Default)]
pub struct LineMemo {
    /// The line's share of [`super::size::encoded_len`].
    pub(super) size_bound: OnceLock<usize>,
    /// The line at its list price and at the price paid (`Cart::totals`).
    pub(super) totals: OnceLock<(Decimal, Decimal)>,
    /// The line as an adapter renders it for a cart in this currency
    /// (`grpc::wire`: its encoded `cart.v1.LineItem`). The domain never reads it.
    pub rendered: OnceLock<(Currency, Box<[u8]>)>,
}

impl Clone for LineMemo {
    fn clone(&self) -> Self {
        LineMemo::default()
    }
}

impl PartialEq for LineMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for LineMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineMemo")
    }
}

impl LineItem {
    pub fn line_total(&self) -> Decimal {
        self.unit_price * Decimal::from(self.quantity)
    }

    /// The line at its list price.
    pub fn list_total(&self) -> Decimal {
        self.list_price * Decimal::from(self.quantity)
    }
}
