//! Cart events: one per change, in the same atomic step as the change.

use chrono::{DateTime, Utc};

use super::{Cart, CartStatus, EventType, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub struct CartEvent {
    /// Position in the event log; increases with every event of a tenant.
    pub sequence: i64,
    pub tenant: TenantId,
    pub event_type: EventType,
    /// None for CREATED.
    pub previous_status: Option<CartStatus>,
    pub occurred_at: DateTime<Utc>,
    /// The cart as it stood right after the change (its id, version, status).
    pub cart: Cart,
}

impl CartEvent {
    pub fn version(&self) -> i64 {
        self.cart.version
    }

    /// Whether no event of this cart can follow.
    pub fn is_final(&self) -> bool {
        self.cart.status.is_final()
    }
}
