//! The cart aggregate: its lines, totals and status machine. Every change
//! goes through [`Cart::apply`], which checks it against the cart's state
//! and bumps the version by exactly one.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    command::{Actor, Command, Details, ItemInput},
    country::Country,
    error::CartError,
    line::LineItem,
    money::Currency,
    size,
    status::{CartStatus, ConfirmationType, EventType},
};

pub type CartId = Uuid;

/// How long carts live; set per deployment.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Idle life of an ACTIVE cart.
    pub ttl: TimeDelta,
    /// Life of a cart awaiting the customer.
    pub checkout_timeout: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: TimeDelta::days(30),
            checkout_timeout: TimeDelta::minutes(15),
        }
    }
}

/// What a cart's lines add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// At list prices.
    pub subtotal: Decimal,
    /// Subtotal less total.
    pub discount: Decimal,
    /// At the prices paid.
    pub total: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub id: CartId,
    pub customer_id: String,
    pub reference: String,
    pub currency: Currency,
    pub country: Option<Country>,
    pub channel: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub confirmation_type: ConfirmationType,
    pub callback_url: String,
    pub callback_cancel_url: String,
    pub status: CartStatus,
    /// In the order first added. Shared: a copy of the cart (the before-
    /// state a write compares with, a replica's memory) shares its lines,
    /// and a change replaces only the lines it touches.
    pub items: Vec<Arc<LineItem>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub merged_into_cart_id: Option<CartId>,
    #[serde(default)]
    pub cancel_reason: String,
}

/// What CreateCart asks for, shape already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCart {
    pub customer_id: String,
    pub reference: String,
    pub currency: Currency,
    pub country: Option<Country>,
    pub channel: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub confirmation_type: ConfirmationType,
    pub callback_url: String,
    pub callback_cancel_url: String,
    pub items: Vec<ItemInput>,
}

/// What one applied change was, for the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub event: EventType,
    pub previous_status: CartStatus,
}

impl Cart {
    pub fn create(
        id: CartId,
        new: NewCart,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<Cart, CartError> {
        let mut cart = Cart {
            id,
            customer_id: new.customer_id,
            reference: new.reference,
            currency: new.currency,
            country: new.country,
            channel: new.channel,
            description: new.description,
            metadata: new.metadata,
            confirmation_type: new.confirmation_type,
            callback_url: new.callback_url,
            callback_cancel_url: new.callback_cancel_url,
            status: CartStatus::Active,
            items: Vec::new(),
            version: 1,
            created_at: now,
            updated_at: now,
            expires_at: None,
            merged_into_cart_id: None,
            cancel_reason: String::new(),
        };
        cart.add_items(&new.items, "items")?;
        cart.expires_at = policy.expiry(cart.status, now);
        size::check_growth(None, &cart)?;
        Ok(cart)
    }

    pub fn subtotal(&self) -> Decimal {
        self.totals().subtotal
    }

    pub fn total(&self) -> Decimal {
        self.totals().total
    }

    pub fn discount_total(&self) -> Decimal {
        self.totals().discount
    }

    /// Subtotal, discount and total, in one pass over the lines.
    pub fn totals(&self) -> Totals {
        let (mut subtotal, mut total) = (Decimal::ZERO, Decimal::ZERO);
        for l in &self.items {
            let (list, paid) = *l
                .memo
                .totals
                .get_or_init(|| (l.list_total(), l.line_total()));
            subtotal += list;
            total += paid;
        }
        Totals {
            subtotal,
            discount: subtotal - total,
            total,
        }
    }

    pub fn item_quantity(&self) -> i64 {
        self.items.iter().map(|l| i64::from(l.quantity)).sum()
    }

    pub fn check_version(&self, expected: i64) -> Result<(), CartError> {
        if expected != 0 && expected != self.version {
            return Err(CartError::VersionMismatch {
                expected,
                actual: self.version,
            });
        }
        Ok(())
    }

    /// Applies one command. On error the cart is left exactly as it was.
    pub fn apply(
        &mut self,
        cmd: &Command,
        expected_version: i64,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<Change, CartError> {
        self.check_version(expected_version)?;
        let mut next = self.clone();
        let previous_status = self.status;
        let event = next.change(cmd)?;
        next.bump(now, policy);
        size::check_growth(Some(self), &next)?;
        *self = next;
        Ok(Change {
            event,
            previous_status,
        })
    }

    /// Records that a change happened: next version, new expiry.
    pub(super) fn bump(&mut self, now: DateTime<Utc>, policy: &Policy) {
        self.version += 1;
        self.updated_at = now;
        self.expires_at = policy.expiry(self.status, now);
    }

    fn change(&mut self, cmd: &Command) -> Result<EventType, CartError> {
        match cmd {
            Command::AddItems(items) => {
                self.require_editable()?;
                self.add_items(items, "items")?;
                Ok(EventType::ItemsChanged)
            }
            Command::SetItems(items) => {
                self.require_editable()?;
                self.set_items(items)?;
                Ok(EventType::ItemsChanged)
            }
            Command::RemoveItems(skus) => {
                self.require_editable()?;
                for sku in skus {
                    let at = self
                        .position(sku)
                        .ok_or_else(|| CartError::ItemNotFound { sku: sku.clone() })?;
                    self.items.remove(at);
                }
                Ok(EventType::ItemsChanged)
            }
            Command::Clear => {
                self.require_editable()?;
                self.items.clear();
                Ok(EventType::ItemsChanged)
            }
            Command::Update(details) => {
                self.require_editable()?;
                self.update(details);
                Ok(EventType::DetailsChanged)
            }
            Command::Submit { expected_total } => {
                self.transition(
                    "submit",
                    &[CartStatus::Active],
                    CartStatus::AwaitingCustomer,
                )?;
                if self.items.is_empty() {
                    return Err(CartError::Empty);
                }
                if let Some(expected) = expected_total
                    && expected.0 != self.total()
                {
                    return Err(CartError::TotalMismatch {
                        expected: expected.0.to_string(),
                        actual: self.currency.format(self.total()),
                    });
                }
                Ok(EventType::StatusChanged)
            }
            Command::Confirm(Actor::Customer) => {
                let to = if self.confirmation_type == ConfirmationType::Manual {
                    CartStatus::AwaitingProvider
                } else {
                    CartStatus::Confirmed
                };
                self.transition("confirm as customer", &[CartStatus::AwaitingCustomer], to)
            }
            Command::Confirm(Actor::Provider) => self.transition(
                "confirm as provider",
                &[CartStatus::AwaitingProvider],
                CartStatus::Confirmed,
            ),
            Command::Cancel { reason, .. } => {
                self.transition(
                    "cancel",
                    &[
                        CartStatus::Active,
                        CartStatus::AwaitingCustomer,
                        CartStatus::AwaitingProvider,
                    ],
                    CartStatus::Cancelled,
                )?;
                self.cancel_reason = reason.clone();
                Ok(EventType::StatusChanged)
            }
            Command::Expire => self.transition(
                "expire",
                &[CartStatus::Active, CartStatus::AwaitingCustomer],
                CartStatus::Expired,
            ),
        }
    }

    pub(super) fn require_editable(&self) -> Result<(), CartError> {
        if self.status == CartStatus::Active {
            Ok(())
        } else {
            Err(CartError::NotEditable {
                status: self.status.as_str(),
            })
        }
    }

    pub(super) fn transition(
        &mut self,
        action: &'static str,
        from: &[CartStatus],
        to: CartStatus,
    ) -> Result<EventType, CartError> {
        if !from.contains(&self.status) {
            return Err(CartError::InvalidTransition {
                action,
                status: self.status.as_str(),
            });
        }
        self.status = to;
        Ok(EventType::StatusChanged)
    }

    fn update(&mut self, d: &Details) {
        if let Some(c) = &d.customer_id {
            self.customer_id.clone_from(c);
        }
        if let Some(c) = d.country {
            self.country = c;
        }
        if let Some(s) = &d.description {
            self.description.clone_from(s);
        }
        if let Some(s) = &d.callback_url {
            self.callback_url.clone_from(s);
        }
        if let Some(s) = &d.callback_cancel_url {
            self.callback_cancel_url.clone_from(s);
        }
        if let Some(m) = &d.metadata {
            self.metadata.clone_from(m);
        }
    }
}

impl Policy {
    /// When a cart in `status`, changed at `now`, expires; None when it does not.
    pub fn expiry(&self, status: CartStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match status {
            CartStatus::Active => now.checked_add_signed(self.ttl),
            CartStatus::AwaitingCustomer => now.checked_add_signed(self.checkout_timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "cart_tests.rs"]
pub(crate) mod tests;
