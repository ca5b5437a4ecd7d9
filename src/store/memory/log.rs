//! The memory store's event log and callback outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::{
    domain::{Cart, CartError, CartEvent, CartId, TenantId, callback::CallbackDue, now},
    feed::EventFeed,
    ports::{Delivery, DeliveryState, EventLog, Outbox, Outcome},
};

pub(super) struct MemoryCallback {
    tenant: TenantId,
    cart: CartId,
    body: String,
    lease_until: Option<DateTime<Utc>>,
    state: DeliveryState,
}

impl MemoryCallback {
    pub(super) fn new(tenant: &TenantId, cart: &Cart, due: CallbackDue, at: DateTime<Utc>) -> Self {
        MemoryCallback {
            tenant: tenant.clone(),
            cart: cart.id,
            body: serde_json::to_string(&due.payload).unwrap_or_default(),
            lease_until: None,
            state: DeliveryState {
                id: Uuid::new_v4(),
                version: cart.version,
                url: due.url,
                state: "pending".into(),
                attempts: 0,
                last_status: None,
                last_error: None,
                next_attempt_at: at,
                delivered_at: None,
            },
        }
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let st = self.state.lock().await;
        let from = usize::try_from(after).unwrap_or(0).min(st.events.len());
        Ok(st.events[from..]
            .iter()
            .filter(|e| &e.tenant == tenant)
            .take(limit)
            .map(|e| CartEvent::clone(e))
            .collect())
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let st = self.state.lock().await;
        Ok(st
            .events
            .iter()
            .filter(|e| &e.tenant == tenant && e.cart.id == cart && e.version() > after_version)
            .take(limit)
            .map(|e| CartEvent::clone(e))
            .collect())
    }

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        let st = self.state.lock().await;
        let version = st
            .carts
            .get(&(tenant.clone(), cart))
            .ok_or(CartError::CartNotFound)?
            .cart
            .version;
        st.events
            .iter()
            .rev()
            .find(|e| &e.tenant == tenant && e.cart.id == cart && e.version() == version)
            .map(|e| CartEvent::clone(e))
            .ok_or_else(|| CartError::internal("a cart without its event"))
    }

    async fn head_now(&self) -> Result<i64, CartError> {
        Ok(self.feed.head())
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim_callbacks(
        &self,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, CartError> {
        let now = now();
        let mut st = self.state.lock().await;
        let mut claimed = Vec::new();
        for cb in st.callbacks.iter_mut() {
            if claimed.len() == limit {
                break;
            }
            let free = cb.lease_until.is_none_or(|l| l <= now);
            if cb.state.state == "pending" && cb.state.next_attempt_at <= now && free {
                cb.state.attempts += 1;
                cb.lease_until = Some(lease_until);
                claimed.push(Delivery {
                    id: cb.state.id,
                    tenant: cb.tenant.clone(),
                    url: cb.state.url.clone(),
                    body: cb.body.clone(),
                    attempts: cb.state.attempts,
                });
            }
        }
        Ok(claimed)
    }

    async fn record_callback(&self, id: Uuid, outcome: &Outcome) -> Result<(), CartError> {
        let now = now();
        let mut st = self.state.lock().await;
        if let Some(cb) = st.callbacks.iter_mut().find(|c| c.state.id == id) {
            let row = outcome.row(now);
            cb.state.state = row.state.to_string();
            if let Some(next) = row.next_attempt_at {
                cb.state.next_attempt_at = next;
            }
            cb.state.last_status = row.last_status;
            cb.state.last_error = row.last_error.map(str::to_string);
            cb.state.delivered_at = row.delivered_at;
            cb.lease_until = None;
        }
        Ok(())
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        let st = self.state.lock().await;
        Ok(st
            .callbacks
            .iter()
            .filter(|c| &c.tenant == tenant && c.cart == cart)
            .map(|c| c.state.clone())
            .collect())
    }
}
