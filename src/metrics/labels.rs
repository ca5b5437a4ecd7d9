//! The label sets of the service's metric families, and the label values
//! other modules name (`CallbackOutcome`, `Deleted`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// How a callback delivery attempt ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The receiver answered HTTP 200.
    Delivered,
    /// Any other answer or no answer; it will be retried.
    Failed,
    /// Retries ran out; the callback is given up.
    Abandoned,
}

impl CallbackOutcome {
    pub const ALL: [CallbackOutcome; 3] = [Self::Delivered, Self::Failed, Self::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }
}

impl EncodeLabelValue for CallbackOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// What a retention sweep deleted.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Deleted {
    /// Events past `CART_EVENT_RETENTION`.
    Events,
    /// Final carts past `CART_RETENTION` (with their events, keys, deliveries).
    Carts,
    /// Callback deliveries finished for `CART_EVENT_RETENTION`.
    Deliveries,
    /// Idempotency keys past their window.
    Keys,
}

impl Deleted {
    pub const ALL: [Deleted; 4] = [Self::Events, Self::Carts, Self::Deliveries, Self::Keys];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Carts => "carts",
            Self::Deliveries => "deliveries",
            Self::Keys => "keys",
        }
    }
}

impl EncodeLabelValue for Deleted {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeletedLabels {
    pub(super) kind: Deleted,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RpcLabels {
    /// `package.Service/Method`, or `unknown` for paths nobody serves.
    pub(super) method: String,
    /// The canonical gRPC code name (`OK`, `NOT_FOUND`, ...).
    pub(super) code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AuthLabels {
    /// `ok` or `failed`.
    pub(super) outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ShedLabels {
    pub(super) tenant: String,
    /// The ErrorInfo reason the call was refused with (`OVERLOADED`, ...).
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallbackLabels {
    pub(super) outcome: CallbackOutcome,
    /// Tenants are configured (API keys), so the set is bounded; URLs and
    /// endpoints never become labels.
    pub(super) tenant: String,
}
