//! Unit tests of the cart aggregate (kept beside it, in their own file).

use super::*;
use crate::domain::{error::Reason, limits::MAX_QUANTITY, money::Amount};

pub fn item(sku: &str, qty: i32, price: &str) -> ItemInput {
    ItemInput {
        sku: sku.into(),
        name: format!("{sku} name"),
        quantity: qty,
        unit_price: Amount::parse(price, "p").unwrap(),
        list_price: None,
        attributes: BTreeMap::new(),
    }
}

pub fn new_cart(currency: &str, items: Vec<ItemInput>) -> Cart {
    let new = NewCart {
        customer_id: String::new(),
        reference: String::new(),
        currency: Currency::parse(currency).unwrap(),
        country: None,
        channel: "default".into(),
        description: String::new(),
        metadata: BTreeMap::new(),
        confirmation_type: ConfirmationType::Automatic,
        callback_url: String::new(),
        callback_cancel_url: String::new(),
        items,
    };
    Cart::create(Uuid::new_v4(), new, Utc::now(), &Policy::default()).unwrap()
}

fn apply(cart: &mut Cart, cmd: Command) -> Result<Change, CartError> {
    cart.apply(&cmd, 0, Utc::now(), &Policy::default())
}

#[test]
fn add_items_increments_and_replaces_details() {
    let mut cart = new_cart("USD", vec![item("A", 1, "0.10")]);
    // Lines keep their totals once summed; a changed line is a new line.
    assert_eq!(cart.currency.format(cart.total()), "0.10");
    apply(
        &mut cart,
        Command::AddItems(vec![item("A", 2, "0.20"), item("B", 1, "0.20")]),
    )
    .unwrap();
    assert_eq!(cart.items.len(), 2);
    assert_eq!(cart.items[0].quantity, 3);
    assert_eq!(cart.items[0].unit_price.to_string(), "0.20");
    assert_eq!(cart.version, 2);
    assert_eq!(cart.currency.format(cart.total()), "0.80");
    assert_eq!(cart.item_quantity(), 4);
}

#[test]
fn totals_are_exact_and_discounts_come_from_list_prices() {
    let mut a = item("A", 1, "0.10");
    a.list_price = Some(Amount::parse("0.15", "l").unwrap());
    let cart = new_cart("USD", vec![a, item("B", 1, "0.20")]);
    assert_eq!(cart.currency.format(cart.total()), "0.30");
    assert_eq!(cart.currency.format(cart.subtotal()), "0.35");
    assert_eq!(cart.currency.format(cart.discount_total()), "0.05");
}

#[test]
fn list_price_below_unit_price_is_refused() {
    let mut a = item("A", 1, "1.00");
    a.list_price = Some(Amount::parse("0.50", "l").unwrap());
    let mut cart = new_cart("USD", vec![]);
    let err = apply(&mut cart, Command::AddItems(vec![a])).unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidAmount);
    assert_eq!(
        cart.version, 1,
        "a refused change leaves the cart as it was"
    );
}

#[test]
fn amounts_must_fit_the_currency() {
    let mut cart = new_cart("ISK", vec![]);
    let err = apply(&mut cart, Command::AddItems(vec![item("A", 1, "10.5")])).unwrap_err();
    let CartError::Invalid(v) = err else {
        panic!("{err:?}")
    };
    assert_eq!(v[0].field, "items[0].unit_price");
    assert_eq!(v[0].reason, Reason::InvalidAmount);
}

#[test]
fn set_items_upserts_and_zero_removes() {
    let mut cart = new_cart("USD", vec![item("A", 5, "1"), item("B", 1, "1")]);
    apply(
        &mut cart,
        Command::SetItems(vec![
            item("A", 2, "3"),
            item("B", 0, "1"),
            item("C", 1, "1"),
        ]),
    )
    .unwrap();
    let got: Vec<_> = cart
        .items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    assert_eq!(got, [("A", 2), ("C", 1)]);
    assert_eq!(cart.items[0].unit_price, Decimal::from(3));
}

#[test]
fn remove_of_a_missing_sku_is_item_not_found_and_changes_nothing() {
    let mut cart = new_cart("USD", vec![item("A", 1, "1")]);
    let err = apply(
        &mut cart,
        Command::RemoveItems(vec!["A".into(), "Z".into()]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::ItemNotFound);
    assert_eq!(cart.items.len(), 1);
}

#[test]
fn line_and_quantity_caps() {
    let mut cart = new_cart(
        "USD",
        (0..500).map(|i| item(&format!("S{i}"), 1, "1")).collect(),
    );
    let err = apply(&mut cart, Command::AddItems(vec![item("X", 1, "1")])).unwrap_err();
    assert_eq!(err.reason(), Reason::TooManyItems);
    let err = apply(
        &mut cart,
        Command::AddItems(vec![item("S1", MAX_QUANTITY, "1")]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidQuantity);
}

#[test]
fn version_is_checked() {
    let mut cart = new_cart("USD", vec![]);
    let err = cart
        .apply(&Command::Clear, 7, Utc::now(), &Policy::default())
        .unwrap_err();
    assert_eq!(
        err,
        CartError::VersionMismatch {
            expected: 7,
            actual: 1
        }
    );
    cart.apply(&Command::Clear, 1, Utc::now(), &Policy::default())
        .unwrap();
    assert_eq!(cart.version, 2);
}

#[test]
fn submit_needs_items_and_the_expected_total() {
    let mut cart = new_cart("USD", vec![]);
    let submit = |t: Option<&str>| Command::Submit {
        expected_total: t.map(|t| Amount::parse(t, "t").unwrap()),
    };
    assert_eq!(
        apply(&mut cart, submit(None)).unwrap_err(),
        CartError::Empty
    );
    apply(&mut cart, Command::AddItems(vec![item("A", 3, "0.10")])).unwrap();
    assert_eq!(
        apply(&mut cart, submit(Some("0.31"))).unwrap_err().reason(),
        Reason::TotalMismatch
    );
    let change = apply(&mut cart, submit(Some("0.30"))).unwrap();
    assert_eq!(change.previous_status, CartStatus::Active);
    assert_eq!(cart.status, CartStatus::AwaitingCustomer);
    let err = apply(&mut cart, Command::AddItems(vec![item("A", 1, "1")])).unwrap_err();
    assert_eq!(err.reason(), Reason::CartNotEditable);
}

fn submitted(kind: ConfirmationType) -> Cart {
    let mut cart = new_cart("USD", vec![item("A", 1, "1")]);
    cart.confirmation_type = kind;
    apply(
        &mut cart,
        Command::Submit {
            expected_total: None,
        },
    )
    .unwrap();
    cart
}

#[test]
fn confirmation_types() {
    for kind in [
        ConfirmationType::Automatic,
        ConfirmationType::ServerCallback,
    ] {
        let mut cart = submitted(kind);
        let err = apply(&mut cart, Command::Confirm(Actor::Provider)).unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidTransition);
        apply(&mut cart, Command::Confirm(Actor::Customer)).unwrap();
        assert_eq!(cart.status, CartStatus::Confirmed);
    }
    let mut cart = submitted(ConfirmationType::Manual);
    apply(&mut cart, Command::Confirm(Actor::Customer)).unwrap();
    assert_eq!(cart.status, CartStatus::AwaitingProvider);
    assert_eq!(cart.expires_at, None);
    let err = apply(&mut cart, Command::Confirm(Actor::Customer)).unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidTransition);
    apply(&mut cart, Command::Confirm(Actor::Provider)).unwrap();
    assert_eq!(cart.status, CartStatus::Confirmed);
}

#[test]
fn final_statuses_refuse_every_change() {
    let mut confirmed = submitted(ConfirmationType::Automatic);
    apply(&mut confirmed, Command::Confirm(Actor::Customer)).unwrap();
    let mut cancelled = new_cart("USD", vec![]);
    apply(
        &mut cancelled,
        Command::Cancel {
            actor: None,
            reason: "x".into(),
        },
    )
    .unwrap();
    assert_eq!(cancelled.cancel_reason, "x");
    let mut expired = new_cart("USD", vec![]);
    apply(&mut expired, Command::Expire).unwrap();
    for mut cart in [confirmed, cancelled, expired] {
        let before = cart.clone();
        for cmd in [
            Command::Clear,
            Command::Submit {
                expected_total: None,
            },
            Command::Confirm(Actor::Provider),
            Command::Cancel {
                actor: None,
                reason: String::new(),
            },
            Command::Expire,
        ] {
            assert!(apply(&mut cart, cmd).is_err());
        }
        assert_eq!(cart, before);
    }
}

#[test]
fn expiry_follows_the_status() {
    let p = Policy::default();
    let now = Utc::now();
    assert_eq!(p.expiry(CartStatus::Active, now), Some(now + p.ttl));
    assert_eq!(
        p.expiry(CartStatus::AwaitingCustomer, now),
        Some(now + p.checkout_timeout)
    );
    assert_eq!(p.expiry(CartStatus::Confirmed, now), None);
}
