//! One attempt of each use case, run in a unit of work by
//! `Carts::attempts`, which commits it, or retries it after a conflict.

use async_trait::async_trait;
use uuid::Uuid;

use super::{replay, write};
use crate::{
    domain::{Cart, CartError, CartId, Command, IdempotencyKey, NewCart, Policy, TenantId, now},
    ports::{Conflict, Inserted, KeyRecord, Loaded, UnitOfWork},
};

/// A use case's work inside one unit of work. (A trait rather than an
/// async closure: the boxed future is `Send`, which tonic needs.)
#[async_trait]
pub(super) trait Attempt: Sync {
    type Output: Send;
    async fn run(&self, uow: &mut dyn UnitOfWork) -> Result<Self::Output, Conflict>;
}

pub(super) struct Create<'a> {
    pub policy: &'a Policy,
    pub tenant: &'a TenantId,
    pub new: NewCart,
    pub fingerprint: [u8; 32],
    pub idem: Option<&'a IdempotencyKey>,
}

#[async_trait]
impl Attempt for Create<'_> {
    type Output = Cart;

    async fn run(&self, uow: &mut dyn UnitOfWork) -> Result<Cart, Conflict> {
        let now = now();
        if let Some(key) = self.idem {
            let mut loaded = uow.load(self.tenant, &[], Some(&key.key)).await?;
            if let Some(answer) = replay(&mut loaded, self.idem, now) {
                return answer.map_err(Conflict::Failed);
            }
        }
        let cart = Cart::create(Uuid::new_v4(), self.new.clone(), now, self.policy)?;
        match uow
            .insert(self.tenant, &cart, self.fingerprint, self.idem)
            .await?
        {
            Inserted::Created => Ok(cart),
            Inserted::ReferenceTaken {
                cart: existing,
                fingerprint,
            } if fingerprint == self.fingerprint => Ok(*existing),
            Inserted::ReferenceTaken { .. } => {
                Err(CartError::ReferenceTaken(cart.reference).into())
            }
        }
    }
}

pub(super) struct ApplyCommand<'a> {
    pub policy: &'a Policy,
    pub tenant: &'a TenantId,
    pub id: CartId,
    pub cmd: &'a Command,
    pub expected_version: i64,
    pub idem: Option<&'a IdempotencyKey>,
}

#[async_trait]
impl Attempt for ApplyCommand<'_> {
    type Output = Cart;

    async fn run(&self, uow: &mut dyn UnitOfWork) -> Result<Cart, Conflict> {
        let key = self.idem.map(|k| k.key.as_str());
        let mut loaded = uow.load(self.tenant, &[self.id], key).await?;
        let now = now();
        if let Some(answer) = replay(&mut loaded, self.idem, now) {
            return answer.map_err(Conflict::Failed);
        }
        let mut cart = loaded.take(self.id)?;
        let change = confirmed(
            &loaded,
            cart.apply(self.cmd, self.expected_version, now, self.policy),
        )?;
        let key = self.idem.map(|key| KeyRecord {
            key,
            response: &cart,
        });
        uow.save(self.tenant, &write(&cart, change, now), key)
            .await?;
        Ok(cart)
    }
}

/// A decision taken on what was loaded: a refusal of carts that may be
/// out of date (`Loaded::unconfirmed`) is taken again on a fresh read.
fn confirmed<T>(loaded: &Loaded, decision: Result<T, CartError>) -> Result<T, Conflict> {
    match decision {
        Err(_) if loaded.unconfirmed => Err(Conflict::Stale),
        other => Ok(other?),
    }
}

pub(super) struct Expire<'a> {
    pub policy: &'a Policy,
    pub limit: usize,
}

#[async_trait]
impl Attempt for Expire<'_> {
    type Output = usize;

    async fn run(&self, uow: &mut dyn UnitOfWork) -> Result<usize, Conflict> {
        let now = now();
        let mut expired = 0;
        for (tenant, mut cart) in uow.load_expired(now, self.limit).await? {
            // Changed since it was found due (e.g. by another replica).
            let Ok(change) = cart.apply(&Command::Expire, 0, now, self.policy) else {
                continue;
            };
            uow.save(&tenant, &write(&cart, change, now), None).await?;
            expired += 1;
        }
        Ok(expired)
    }
}
