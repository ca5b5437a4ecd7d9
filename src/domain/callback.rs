//! Which status changes call the provider back, and with what.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Cart, CartStatus, cart::Change};

/// The JSON body POSTed to the provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallbackPayload {
    pub cart_id: String,
    pub reference: String,
    /// As the proto names it, e.g. `CART_STATUS_CONFIRMED`.
    pub status: String,
    pub total: String,
    pub currency: String,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallbackDue {
    pub url: String,
    pub payload: CallbackPayload,
}

/// The callback a change calls for: CONFIRMED to `callback_url`; CANCELLED,
/// or EXPIRED while awaiting the customer, to `callback_cancel_url`.
pub fn callback_due(cart: &Cart, change: Change, at: DateTime<Utc>) -> Option<CallbackDue> {
    let url = match (cart.status, change.previous_status) {
        (CartStatus::Confirmed, _) => &cart.callback_url,
        (CartStatus::Cancelled, _) | (CartStatus::Expired, CartStatus::AwaitingCustomer) => {
            &cart.callback_cancel_url
        }
        _ => return None,
    };
    if url.is_empty() || change.previous_status == cart.status {
        return None;
    }
    Some(CallbackDue {
        url: url.clone(),
        payload: CallbackPayload {
            cart_id: cart.id.to_string(),
            reference: cart.reference.clone(),
            status: format!("CART_STATUS_{}", cart.status.as_str()),
            total: cart.currency.format(cart.total()),
            currency: cart.currency.code().to_string(),
            version: cart.version,
            occurred_at: at,
        },
    })
}

/// Whether a cart as it now stands may have just called for a callback:
/// cheap, and true for every change `callback_due` answers for (so a
/// store can wake delivery workers only when it may matter).
pub fn may_call_back(cart: &Cart) -> bool {
    match cart.status {
        CartStatus::Confirmed => !cart.callback_url.is_empty(),
        CartStatus::Cancelled | CartStatus::Expired => !cart.callback_cancel_url.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Actor, Command, ConfirmationType, Policy,
        cart::tests::{item, new_cart},
    };

    fn cart(kind: ConfirmationType) -> Cart {
        let mut c = new_cart("USD", vec![item("A", 2, "1.50")]);
        c.confirmation_type = kind;
        c.callback_url = "https://p.example/ok".into();
        c.callback_cancel_url = "https://p.example/cancel".into();
        c
    }

    fn run(c: &mut Cart, cmd: Command) -> Option<CallbackDue> {
        let change = c.apply(&cmd, 0, Utc::now(), &Policy::default()).unwrap();
        callback_due(c, change, Utc::now())
    }

    #[test]
    fn confirmation_calls_back_once_the_cart_is_confirmed() {
        let mut c = cart(ConfirmationType::Manual);
        assert!(
            run(
                &mut c,
                Command::Submit {
                    expected_total: None
                }
            )
            .is_none()
        );
        assert!(
            run(&mut c, Command::Confirm(Actor::Customer)).is_none(),
            "manual: not yet"
        );
        let due = run(&mut c, Command::Confirm(Actor::Provider)).unwrap();
        assert_eq!(due.url, "https://p.example/ok");
        assert_eq!(
            (due.payload.total.as_str(), due.payload.version),
            ("3.00", 4)
        );
        assert_eq!(due.payload.status, "CART_STATUS_CONFIRMED");
    }

    #[test]
    fn cancel_and_expiry_while_awaiting_the_customer_call_the_cancel_url() {
        let mut c = cart(ConfirmationType::Automatic);
        let due = run(
            &mut c,
            Command::Cancel {
                actor: None,
                reason: String::new(),
            },
        )
        .unwrap();
        assert_eq!(due.url, "https://p.example/cancel");
        let mut idle = cart(ConfirmationType::Automatic);
        assert!(
            run(&mut idle, Command::Expire).is_none(),
            "an idle ACTIVE cart expires quietly"
        );
        let mut waiting = cart(ConfirmationType::Automatic);
        run(
            &mut waiting,
            Command::Submit {
                expected_total: None,
            },
        );
        assert!(run(&mut waiting, Command::Expire).is_some());
    }

    #[test]
    fn no_url_no_callback() {
        let mut c = new_cart("USD", vec![item("A", 1, "1")]);
        assert!(
            run(
                &mut c,
                Command::Cancel {
                    actor: None,
                    reason: String::new()
                }
            )
            .is_none()
        );
    }
}
