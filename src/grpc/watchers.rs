//! The cap on watch streams per tenant on this replica
//! (`CART_MAX_WATCHERS_PER_TENANT`). A stream holds its slot for as long
//! as its loop runs; the loop ends when it ends or when the client goes
//! away (the stream, and the loop in it, is dropped), whichever is first,
//! so a cancelled stream frees its slot at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::domain::{CartError, TenantId};

pub struct WatcherLimit {
    max: usize,
    open: Mutex<HashMap<TenantId, usize>>,
}

impl WatcherLimit {
    pub fn new(max: usize) -> Arc<WatcherLimit> {
        Arc::new(WatcherLimit {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more stream of `tenant`, or `TooManyWatchers`.
    pub fn try_open(self: &Arc<Self>, tenant: &TenantId) -> Result<WatcherSlot, CartError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(tenant.clone()).or_insert(0);
        if *n >= self.max {
            return Err(CartError::TooManyWatchers { limit: self.max });
        }
        *n += 1;
        Ok(WatcherSlot {
            limit: self.clone(),
            tenant: tenant.clone(),
        })
    }

    fn close(&self, tenant: &TenantId) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(tenant);
            }
        }
    }
}

/// One open stream; frees its slot when dropped.
pub struct WatcherSlot {
    limit: Arc<WatcherLimit>,
    tenant: TenantId,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.limit.close(&self.tenant);
    }
}

/// Runs a watcher loop holding its slot until the loop ends or is dropped
/// with its stream (see `crate::watch::outlet`).
pub async fn run_holding(slot: WatcherSlot, run: impl Future<Output = ()>) {
    run.await;
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_tenant_and_freed_on_drop() {
        let limit = WatcherLimit::new(2);
        let (a, b) = (TenantId("a".into()), TenantId("b".into()));
        let first = limit.try_open(&a).unwrap();
        let _second = limit.try_open(&a).unwrap();
        assert_eq!(
            limit.try_open(&a).err(),
            Some(CartError::TooManyWatchers { limit: 2 })
        );
        let _other = limit.try_open(&b).unwrap();
        drop(first);
        assert!(limit.try_open(&a).is_ok());
    }
}
