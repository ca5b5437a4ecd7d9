//! The carts this replica last read or wrote, by id, so that a change can
//! skip reading its cart (`Isolation::Remembered`): the write is
//! conditional on the version remembered, so a cart changed since (by
//! another replica, an expiry sweep, retention) costs a write that does
//! nothing and a fresh read (`Conflict::Stale`), never a lost update.
//! Reads (GetCart, ListCarts, watches) never come from here: they see what
//! every replica committed. Bounded by the carts' encoded sizes
//! (`CART_CACHE_MIB`; in memory a cart takes two to four times its
//! encoded size, more for small carts, plus its lines' encoded form once
//! it has been answered: `domain::LineMemo`).

use std::sync::Arc;

use quick_cache::{Weighter, sync::Cache};

use crate::domain::{Cart, CartId, TenantId, size::encoded_len};

/// Encoded bytes of a cart of a few lines, for the cache's sizing only.
const TYPICAL_CART_BYTES: u64 = 1024;

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
    /// None: remember nothing.
    carts: Option<Cache<CartId, Arc<Kept>, ByEncodedSize>>,
}

impl Recent {
    /// Remembers carts of up to `bytes` encoded bytes in all.
    pub(super) fn new(bytes: u64) -> Recent {
        let estimated = usize::try_from(bytes / TYPICAL_CART_BYTES).unwrap_or(usize::MAX);
        Recent {
            carts: (bytes > 0)
                .then(|| Cache::with_weighter(estimated.max(1), bytes, ByEncodedSize)),
        }
    }

    /// The tenant's cart `id` as this replica last saw it stored.
    pub(super) fn get(&self, tenant: &TenantId, id: CartId) -> Option<Arc<Kept>> {
        self.carts
            .as_ref()?
            .get(&id)
            .filter(|k| k.tenant == *tenant)
    }

    /// Remembers `cart` as stored now (read, or written and committed);
    /// `encoded`: its encoded size, when known.
    pub(super) fn keep(&self, tenant: &TenantId, cart: Cart, encoded: Option<usize>) -> Arc<Kept> {
        let Some(carts) = &self.carts else {
            return Arc::new(Kept {
                tenant: tenant.clone(),
                cart,
                weight: 0,
            });
        };
        let encoded = encoded.unwrap_or_else(|| encoded_len(&cart));
        let kept = Arc::new(Kept {
            tenant: tenant.clone(),
            weight: encoded as u64 + 1,
            cart,
        });
        carts.insert(kept.cart.id, kept.clone());
        kept
    }

    /// Forgets the cart `id`: what is remembered may no longer be stored.
    pub(super) fn forget(&self, id: CartId) {
        if let Some(carts) = &self.carts {
            carts.remove(&id);
        }
    }
}
