//! The use cases of carts: every rule of a change, written once, over the
//! ports (`crate::ports`). The gRPC services call these; the store adapters
//! only store.
//!
//! A change runs as a unit of work: load the cart and what its idempotency
//! key remembers, replay the key's answer when it is in its window, apply
//! the command (domain), save the next version with its event, key and
//! callback. The first attempt is optimistic (Postgres: two round trips, no
//! transaction); when a concurrent writer won, the next attempts run
//! locked, so a contended cart is serialised rather than retried without end.

mod attempts;
pub mod housekeeping;
mod merge;

use std::sync::Arc;

use self::attempts::{ApplyCommand, Attempt, Create, Expire};
pub use self::{
    housekeeping::{Housekeeping, Keep, Swept},
    merge::MergeRequest,
};
use crate::{
    domain::{
        Cart, CartError, CartId, Command, IdempotencyKey, NewCart, Policy, TenantId,
        callback::callback_due, cart::Change, now,
    },
    ports::{CartPage, CartRepository, Conflict, Isolation, ListQuery, Loaded, Write},
};
use chrono::{DateTime, TimeDelta, Utc};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: TimeDelta = TimeDelta::hours(24);

/// Attempts of one call before it answers UNAVAILABLE: the first is
/// optimistic, later ones lock the cart and only meet a concurrent key or a
/// serialization failure.
const MAX_ATTEMPTS: usize = 4;

/// Carts and their changes, for one store.
#[derive(Clone)]
pub struct Carts {
    repo: Arc<dyn CartRepository>,
    policy: Policy,
}

impl Carts {
    pub fn new(repo: Arc<dyn CartRepository>, policy: Policy) -> Self {
        Carts { repo, policy }
    }

    pub async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        self.repo.get(tenant, id).await
    }

    pub async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<CartPage, CartError> {
        self.repo.list(tenant, query).await
    }

    /// Creates a cart. A `reference` the tenant already used answers that
    /// cart when `fingerprint` (of the create request) matches, and
    /// `ReferenceTaken` when it does not.
    pub async fn create(
        &self,
        tenant: &TenantId,
        new: NewCart,
        fingerprint: [u8; 32],
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let create = Create {
            policy: &self.policy,
            tenant,
            new,
            fingerprint,
            idem,
        };
        self.attempts(idem.map(|k| (tenant, k)), Isolation::Optimistic, &create)
            .await
    }

    /// Applies one command to one cart and answers the cart as it then stands.
    pub async fn change(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let change = ApplyCommand {
            policy: &self.policy,
            tenant,
            id,
            cmd,
            expected_version,
            idem,
        };
        self.attempts(idem.map(|k| (tenant, k)), Isolation::Remembered, &change)
            .await
    }

    /// Expires up to `limit` carts past their expiry (ACTIVE past the TTL,
    /// AWAITING_CUSTOMER past the checkout timeout), each as a normal
    /// versioned change; safe on several replicas at once (carts another
    /// sweeper holds are skipped). Answers how many it expired.
    pub async fn expire_due(&self, limit: usize) -> Result<usize, CartError> {
        let expire = Expire {
            policy: &self.policy,
            limit,
        };
        self.attempts(None, Isolation::Locked, &expire).await
    }

    /// Runs `body` in a unit of work until it commits, fails for good or
    /// runs out of attempts. After a race the next attempt runs `Locked`;
    /// after remembered carts proved stale, `Optimistic` (a fresh read).
    /// `key`: the call's idempotency key and its tenant, if it has one.
    async fn attempts<T>(
        &self,
        key: Option<(&TenantId, &IdempotencyKey)>,
        first: Isolation,
        body: &impl Attempt<Output = T>,
    ) -> Result<T, CartError> {
        let mut isolation = first;
        for n in 0..MAX_ATTEMPTS {
            let mut uow = self.repo.begin(isolation).await?;
            let outcome = match body.run(uow.as_mut()).await {
                Ok(value) => uow.commit().await.map(|()| value),
                Err(e) => {
                    uow.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(Conflict::Failed(e)) => return Err(e),
                Err(Conflict::Raced | Conflict::Retry) => {
                    tracing::debug!(attempt = n, "cart write raced; retrying under a lock");
                    isolation = Isolation::Locked;
                }
                Err(Conflict::Stale) => {
                    tracing::debug!(attempt = n, "remembered cart was stale; reading it afresh");
                    isolation = Isolation::Optimistic;
                }
                Err(Conflict::KeyTaken) => {
                    // A concurrent call with this key committed (the next
                    // attempt replays it) or a key past its window is in the way.
                    if let Some((tenant, key)) = key {
                        let cutoff = now() - IDEMPOTENCY_WINDOW;
                        self.repo.forget_key(tenant, &key.key, cutoff).await?;
                    }
                }
            }
        }
        Err(CartError::Unavailable(
            "too much contention on this cart; retry".into(),
        ))
    }
}

/// The answer a remembered key gives, when it is in its window: the first
/// call's result for the same request, `IdempotencyKeyReused` for another.
fn replay(
    loaded: &mut Loaded,
    key: Option<&IdempotencyKey>,
    now: DateTime<Utc>,
) -> Option<Result<Cart, CartError>> {
    let (key, remembered) = (key?, loaded.remembered.take()?);
    (now - remembered.recorded_at < IDEMPOTENCY_WINDOW).then(|| {
        if remembered.fingerprint == key.fingerprint {
            Ok(remembered.response)
        } else {
            Err(CartError::IdempotencyKeyReused)
        }
    })
}

/// A change as it is saved: with the callback it calls for.
fn write(cart: &Cart, change: Change, now: DateTime<Utc>) -> Write<'_> {
    Write {
        cart,
        change,
        at: now,
        callback: callback_due(cart, change, now),
    }
}
