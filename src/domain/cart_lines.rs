//! How a change edits a cart's lines: inputs checked against the cart's
//! currency, an SKU already in the cart merged into its line, the bound on
//! lines. Part of the aggregate (`super::cart`), apart for its size.

use std::sync::Arc;

use super::{
    cart::Cart,
    command::{ItemInput, check_quantity},
    error::{CartError, FieldViolation, Reason, Violations},
    limits::{MAX_LINES, MAX_QUANTITY},
    line::{LineItem, LineMemo},
};

impl Cart {
    pub(super) fn position(&self, sku: &str) -> Option<usize> {
        self.items.iter().position(|l| l.sku == sku)
    }

    /// Turns an input into a line of this cart's currency.
    fn line(&self, item: &ItemInput, field: &str) -> Result<LineItem, CartError> {
        let mut v = Violations::default();
        let unit = v.check(
            self.currency
                .check_scale(item.unit_price, &format!("{field}.unit_price")),
        );
        let list = match item.list_price {
            Some(list) => v.check(
                self.currency
                    .check_scale(list, &format!("{field}.list_price")),
            ),
            None => unit,
        };
        if let (Some(u), Some(l)) = (unit, list)
            && l < u
        {
            v.push(FieldViolation::new(
                format!("{field}.list_price"),
                Reason::InvalidAmount,
                format!("{l} is below the unit price {u}"),
            ));
        }
        v.into_result()?;
        Ok(LineItem {
            sku: item.sku.clone(),
            name: item.name.clone(),
            quantity: item.quantity,
            unit_price: unit.unwrap_or_default(),
            list_price: list.unwrap_or_default(),
            attributes: item.attributes.clone(),
            memo: LineMemo::default(),
        })
    }

    /// Adds lines: an SKU already here gets its quantity increased and the rest replaced.
    pub(super) fn add_items(&mut self, items: &[ItemInput], list: &str) -> Result<(), CartError> {
        for (i, item) in items.iter().enumerate() {
            let field = format!("{list}[{i}]");
            let mut line = self.line(item, &field)?;
            match self.position(&item.sku) {
                Some(at) => {
                    line.quantity = self.items[at].quantity.saturating_add(item.quantity);
                    check_quantity(line.quantity, &format!("{field}.quantity"), false).map_err(
                        |mut v| {
                            v.description = format!(
                                "would make the line {} (at most {MAX_QUANTITY})",
                                line.quantity
                            );
                            CartError::Invalid(vec![v])
                        },
                    )?;
                    self.items[at] = Arc::new(line);
                }
                None => self.items.push(Arc::new(line)),
            }
        }
        self.check_lines()
    }

    pub(super) fn set_items(&mut self, items: &[ItemInput]) -> Result<(), CartError> {
        for (i, item) in items.iter().enumerate() {
            let at = self.position(&item.sku);
            if item.quantity == 0 {
                if let Some(at) = at {
                    self.items.remove(at);
                }
                continue;
            }
            let line = Arc::new(self.line(item, &format!("items[{i}]"))?);
            match at {
                Some(at) => self.items[at] = line,
                None => self.items.push(line),
            }
        }
        self.check_lines()
    }

    pub(super) fn check_lines(&self) -> Result<(), CartError> {
        if self.items.len() > MAX_LINES {
            return Err(CartError::TooManyItems {
                lines: self.items.len(),
                limit: MAX_LINES,
            });
        }
        Ok(())
    }
}
