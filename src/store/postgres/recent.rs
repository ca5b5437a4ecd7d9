//! The carts this replica last read or wrote, by id, so that a change can
//! skip reading its cart (`Isolation::Remembered`): the write is
//! conditional on the version remembered, so a cart changed since (by
//! another replica, an expiry sweep, retention) costs a write that does
//! nothing and a fresh read (`Conflict::Stale`), never a lost update.
//! Reads (GetCart, ListCarts, watches) never come from here: they see what
//! every replica committed. Bounded by the carts' encoded sizes.

use std::sync::Arc;

use quick_cache::{Weighter, sync::Cache};

use crate::domain::{Cart, CartId, TenantId, size::encoded_len};

/// Encoded bytes of the carts remembered at most, per replica: some
/// 50,000 carts of a few lines (a cart is at most 1 MiB). In memory a cart
/// takes about four times its encoded size.
const CAPACITY_BYTES: u64 = 32 * 1024 * 1024;
/// For the cache's sizing only.
const ESTIMATED_CARTS: usize = 50_000;

/// A cart as stored, with its tenant (a cart id names one tenant's cart;
/// another tenant asking for it must not see it).
pub(super) struct Kept {
    pub tenant: TenantId,
    pub cart: Cart,
    weight: u64,
}

#[derive(Clone)]
struct ByEncodedSize;

impl Weighter<CartId, Arc<Kept>> for ByEncodedSize {
    fn weight(&self, _: &CartId, kept: &Arc<Kept>) -> u64 {
        kept.weight
    }
}

pub(super) struct Recent {
    carts: Cache<CartId, Arc<Kept>, ByEncodedSize>,
}

impl Recent {
    pub(super) fn new() -> Recent {
        Recent {
            carts: Cache::with_weighter(ESTIMATED_CARTS, CAPACITY_BYTES, ByEncodedSize),
        }
    }

    /// The tenant's cart `id` as this replica last saw it stored.
    pub(super) fn get(&self, tenant: &TenantId, id: CartId) -> Option<Arc<Kept>> {
        self.carts.get(&id).filter(|k| k.tenant == *tenant)
    }

    /// Remembers `cart` as stored now (read, or written and committed);
    /// `encoded`: its encoded size, when known.
    pub(super) fn keep(&self, tenant: &TenantId, cart: Cart, encoded: Option<usize>) -> Arc<Kept> {
        let encoded = encoded.unwrap_or_else(|| encoded_len(&cart));
        let kept = Arc::new(Kept {
            tenant: tenant.clone(),
            weight: encoded as u64 + 1,
            cart,
        });
        self.carts.insert(kept.cart.id, kept.clone());
        kept
    }

    /// Forgets the cart `id`: what is remembered may no longer be stored.
    pub(super) fn forget(&self, id: CartId) {
        self.carts.remove(&id);
    }
}
