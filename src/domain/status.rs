//! Cart statuses, confirmation types and event types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CartStatus {
    /// Takes item and detail changes.
    Active,
    /// Submitted: frozen, the payment request is out.
    AwaitingCustomer,
    /// The customer confirmed a MANUAL cart; the provider has to confirm.
    AwaitingProvider,
    Confirmed,
    Cancelled,
    Expired,
    Merged,
}

impl CartStatus {
    pub const ALL: [CartStatus; 7] = [
        CartStatus::Active,
        CartStatus::AwaitingCustomer,
        CartStatus::AwaitingProvider,
        CartStatus::Confirmed,
        CartStatus::Cancelled,
        CartStatus::Expired,
        CartStatus::Merged,
    ];

    /// No change of any kind is possible from a final status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CartStatus::Confirmed
                | CartStatus::Cancelled
                | CartStatus::Expired
                | CartStatus::Merged
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Active => "ACTIVE",
            CartStatus::AwaitingCustomer => "AWAITING_CUSTOMER",
            CartStatus::AwaitingProvider => "AWAITING_PROVIDER",
            CartStatus::Confirmed => "CONFIRMED",
            CartStatus::Cancelled => "CANCELLED",
            CartStatus::Expired => "EXPIRED",
            CartStatus::Merged => "MERGED",
        }
    }

    pub fn parse(s: &str) -> Option<CartStatus> {
        CartStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How a submitted cart gets confirmed (Netgiro's confirmation types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfirmationType {
    /// The customer's confirmation confirms the cart.
    #[default]
    Automatic,
    /// As automatic; the provider learns of it through its callback.
    ServerCallback,
    /// The customer's confirmation leaves the cart awaiting the provider.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Created,
    ItemsChanged,
    DetailsChanged,
    StatusChanged,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "CREATED",
            EventType::ItemsChanged => "ITEMS_CHANGED",
            EventType::DetailsChanged => "DETAILS_CHANGED",
            EventType::StatusChanged => "STATUS_CHANGED",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        [
            EventType::Created,
            EventType::ItemsChanged,
            EventType::DetailsChanged,
            EventType::StatusChanged,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in CartStatus::ALL {
            assert_eq!(CartStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            EventType::parse("STATUS_CHANGED"),
            Some(EventType::StatusChanged)
        );
    }

    #[test]
    fn final_statuses() {
        let finals: Vec<_> = CartStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                CartStatus::Confirmed,
                CartStatus::Cancelled,
                CartStatus::Expired,
                CartStatus::Merged
            ]
        );
    }
}
