//! Merging two carts: an anonymous cart into a customer's one when they sign
//! in (COMBINE_ITEMS), or handing the anonymous cart over whole and retiring
//! the customer's old one (KEEP_SOURCE).

use chrono::{DateTime, Utc};

use super::{
    cart::{Cart, Change, Policy},
    command::ItemInput,
    error::{CartError, FieldViolation, Reason},
    money::Amount,
    size::check_growth,
    status::{CartStatus, EventType},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeStrategy {
    /// The source's lines go into the target; the source becomes MERGED.
    #[default]
    CombineItems,
    /// The source goes to the customer; the target, if any, becomes MERGED.
    KeepSource,
}

/// The changes a merge made; the carts themselves are changed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOutcome {
    pub source: Change,
    pub target: Option<Change>,
    /// Whether the call answers with the target (COMBINE_ITEMS) or the source.
    pub returns_target: bool,
}

impl MergeOutcome {
    /// The cart the call answers with, of the two merged.
    pub fn answer<'a>(&self, source: &'a Cart, target: Option<&'a Cart>) -> &'a Cart {
        match target {
            Some(t) if self.returns_target => t,
            _ => source,
        }
    }
}

/// Merges `source` with `target`. On error neither cart is changed.
pub fn merge(
    source: &mut Cart,
    target: Option<&mut Cart>,
    customer_id: &str,
    strategy: MergeStrategy,
    expected_version: i64,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<MergeOutcome, CartError> {
    source.check_version(expected_version)?;
    let mut src = source.clone();
    let mut tgt = target.as_deref().cloned();
    let outcome = match strategy {
        MergeStrategy::CombineItems => {
            let tgt = tgt.as_mut().ok_or_else(|| {
                CartError::invalid(
                    "target_cart_id",
                    Reason::InvalidField,
                    "is required to combine items",
                )
            })?;
            combine(&mut src, tgt, customer_id)?
        }
        MergeStrategy::KeepSource => keep_source(&mut src, tgt.as_mut(), customer_id)?,
    };
    src.bump(now, policy);
    check_growth(Some(source), &src)?;
    let tgt = match (target.as_deref(), tgt) {
        (Some(old), Some(mut new)) => {
            new.bump(now, policy);
            check_growth(Some(old), &new)?;
            Some(new)
        }
        _ => None,
    };
    *source = src;
    if let (Some(t), Some(new)) = (target, tgt) {
        *t = new;
    }
    Ok(outcome)
}

fn check_owner(cart: &Cart, customer_id: &str, field: &str) -> Result<(), CartError> {
    if cart.customer_id.is_empty() || cart.customer_id == customer_id {
        Ok(())
    } else {
        Err(CartError::CustomerMismatch(format!(
            "{field} belongs to another customer"
        )))
    }
}

fn retire(cart: &mut Cart, into: &Cart) -> Result<Change, CartError> {
    let previous_status = cart.status;
    cart.transition("merge", &[CartStatus::Active], CartStatus::Merged)?;
    cart.merged_into_cart_id = Some(into.id);
    Ok(Change {
        event: EventType::StatusChanged,
        previous_status,
    })
}

fn combine(src: &mut Cart, tgt: &mut Cart, customer_id: &str) -> Result<MergeOutcome, CartError> {
    src.require_editable()?;
    tgt.require_editable()?;
    check_owner(src, customer_id, "source_cart_id")?;
    check_owner(tgt, customer_id, "target_cart_id")?;
    if src.currency != tgt.currency {
        return Err(CartError::Precondition(FieldViolation::new(
            "target_cart_id",
            Reason::InvalidCurrency,
            format!("is in {}, the source in {}", tgt.currency, src.currency),
        )));
    }
    let lines: Vec<ItemInput> = src
        .items
        .iter()
        .map(|l| ItemInput {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: Amount(l.unit_price),
            list_price: Some(Amount(l.list_price)),
            attributes: l.attributes.clone(),
        })
        .collect();
    let previous_status = tgt.status;
    tgt.add_items(&lines, "source_cart_id.items")?;
    if !customer_id.is_empty() {
        tgt.customer_id = customer_id.to_string();
    }
    let source = retire(src, tgt)?;
    Ok(MergeOutcome {
        source,
        target: Some(Change {
            event: EventType::ItemsChanged,
            previous_status,
        }),
        returns_target: true,
    })
}

fn keep_source(
    src: &mut Cart,
    tgt: Option<&mut Cart>,
    customer_id: &str,
) -> Result<MergeOutcome, CartError> {
    if customer_id.is_empty() {
        return Err(CartError::invalid(
            "customer_id",
            Reason::InvalidField,
            "is required to keep the source",
        ));
    }
    src.require_editable()?;
    check_owner(src, customer_id, "source_cart_id")?;
    let target = match tgt {
        Some(t) => {
            check_owner(t, customer_id, "target_cart_id")?;
            Some(retire(t, src)?)
        }
        None => None,
    };
    let previous_status = src.status;
    src.customer_id = customer_id.to_string();
    Ok(MergeOutcome {
        source: Change {
            event: EventType::DetailsChanged,
            previous_status,
        },
        target,
        returns_target: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cart::tests::{item, new_cart};

    fn run(
        src: &mut Cart,
        tgt: Option<&mut Cart>,
        customer: &str,
        s: MergeStrategy,
    ) -> Result<MergeOutcome, CartError> {
        merge(src, tgt, customer, s, 0, Utc::now(), &Policy::default())
    }

    #[test]
    fn combine_adds_quantities_and_retires_the_source() {
        let mut src = new_cart("USD", vec![item("A", 2, "1"), item("B", 1, "2")]);
        let mut tgt = new_cart("USD", vec![item("A", 1, "1")]);
        tgt.customer_id = "c1".into();
        let out = run(&mut src, Some(&mut tgt), "c1", MergeStrategy::CombineItems).unwrap();
        assert!(out.returns_target);
        assert_eq!(src.status, CartStatus::Merged);
        assert_eq!(src.merged_into_cart_id, Some(tgt.id));
        assert_eq!((src.version, tgt.version), (2, 2));
        let got: Vec<_> = tgt
            .items
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect();
        assert_eq!(got, [("A", 3), ("B", 1)]);
    }

    #[test]
    fn a_target_of_another_customer_is_refused_and_nothing_changes() {
        let mut src = new_cart("USD", vec![item("A", 1, "1")]);
        let mut tgt = new_cart("USD", vec![]);
        tgt.customer_id = "someone-else".into();
        let (s0, t0) = (src.clone(), tgt.clone());
        for strategy in [MergeStrategy::CombineItems, MergeStrategy::KeepSource] {
            let err = run(&mut src, Some(&mut tgt), "c1", strategy).unwrap_err();
            assert_eq!(err.reason(), Reason::CustomerMismatch);
        }
        assert_eq!((src, tgt), (s0, t0));
    }

    #[test]
    fn keep_source_hands_the_source_over_and_retires_the_target() {
        let mut src = new_cart("USD", vec![item("A", 1, "1")]);
        let mut tgt = new_cart("EUR", vec![item("Z", 1, "1")]);
        let out = run(&mut src, Some(&mut tgt), "c1", MergeStrategy::KeepSource).unwrap();
        assert!(!out.returns_target);
        assert_eq!(src.customer_id, "c1");
        assert_eq!(src.status, CartStatus::Active);
        assert_eq!(tgt.status, CartStatus::Merged);
        assert_eq!(tgt.merged_into_cart_id, Some(src.id));
    }

    #[test]
    fn combine_needs_the_same_currency_and_a_target() {
        let mut src = new_cart("USD", vec![]);
        let mut tgt = new_cart("EUR", vec![]);
        let err = run(&mut src, Some(&mut tgt), "", MergeStrategy::CombineItems).unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidCurrency);
        let err = run(&mut src, None, "", MergeStrategy::CombineItems).unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidField);
    }
}
