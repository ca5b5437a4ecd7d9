//! The memory store's event log and callback outbox ports.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use uuid::Uuid;

use super::MemoryStore;
use crate::{
    domain::{CartError, CartEvent, CartId, TenantId, now},
    feed::EventFeed,
    ports::{Backlog, Claim, Delivery, DeliveryState, EventLog, Outbox, Outcome},
};

#[async_trait]
impl EventLog for MemoryStore {
    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        self.state
            .lock()
            .await
            .events
            .of_tenant(tenant, after, limit)
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        self.state
            .lock()
            .await
            .events
            .of_cart(tenant, cart, after_version, limit)
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
            .version(tenant, cart, version)
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
    async fn claim_callbacks(&self, claim: &Claim) -> Result<Vec<Delivery>, CartError> {
        Ok(self.state.lock().await.outbox.claim(claim, now()))
    }

    async fn record_callbacks(&self, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError> {
        let now = now();
        let mut st = self.state.lock().await;
        for (id, outcome) in outcomes {
            st.outbox.record(*id, outcome, now);
        }
        Ok(())
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        Ok(self.state.lock().await.outbox.of(tenant, cart))
    }

    async fn callback_backlog(&self) -> Result<Backlog, CartError> {
        Ok(self.state.lock().await.outbox.backlog(now()))
    }

    fn callbacks_written(&self) -> Arc<Notify> {
        self.callbacks_written.clone()
    }
}
