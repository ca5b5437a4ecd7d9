//! The memory store's retention port. Each call holds the store's lock,
//! which no writer holds for long, so it is atomic like a Postgres batch.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::{
    domain::{CartError, CartId, TenantId},
    ports::Retention,
};

#[async_trait]
impl Retention for MemoryStore {
    async fn purge_events(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError> {
        let st = &mut *self.state.lock().await;
        let carts = &st.carts;
        let current =
            |t: &TenantId, id: CartId| carts.get(&(t.clone(), id)).map(|s| s.cart.version);
        Ok(st.events.purge(before, limit, current))
    }

    async fn purge_carts(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, CartError> {
        let mut st = self.state.lock().await;
        let mut doomed: Vec<_> = st
            .carts
            .iter()
            .filter(|(_, s)| s.cart.status.is_final() && s.cart.updated_at <= before)
            .map(|(k, s)| (s.cart.updated_at, k.clone()))
            .collect();
        // Oldest first, as Postgres takes them.
        doomed.sort_by_key(|(at, _)| *at);
        doomed.truncate(limit);
        for (_, (tenant, id)) in &doomed {
            let Some(gone) = st.carts.remove(&(tenant.clone(), *id)) else {
                continue;
            };
            let reference = (tenant.clone(), gone.cart.reference);
            if st.references.get(&reference) == Some(id) {
                st.references.remove(&reference);
            }
            st.events.remove_cart(tenant, *id);
            st.outbox.remove_cart(tenant, *id);
        }
        // Keys that answer a deleted cart, as Postgres finds them: by the
        // remembered response's id, recorded by the cart's changes.
        let answered: HashMap<(&TenantId, CartId), DateTime<Utc>> =
            doomed.iter().map(|(at, (t, id))| ((t, *id), *at)).collect();
        st.keys.retain(|(t, _), r| {
            answered
                .get(&(t, r.response.id))
                .is_none_or(|at| r.recorded_at > *at)
        });
        Ok(doomed.len())
    }

    async fn purge_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError> {
        Ok(self.state.lock().await.outbox.purge(before, limit))
    }
}
