//! MergeCarts: two carts changed in one locked unit of work.

use async_trait::async_trait;

use super::{Carts, attempts::Attempt, replay, write};
use crate::{
    domain::{
        Cart, CartError, CartId, IdempotencyKey, MergeStrategy, Policy, TenantId, merge, now,
    },
    ports::{Conflict, Isolation, KeyRecord, UnitOfWork},
};

#[derive(Debug, Clone, PartialEq)]
pub struct MergeRequest {
    pub source: CartId,
    pub target: Option<CartId>,
    pub customer_id: String,
    pub strategy: MergeStrategy,
    pub expected_version: i64,
}

impl Carts {
    /// Merges two carts in one atomic step; answers the cart the strategy keeps.
    pub async fn merge(
        &self,
        tenant: &TenantId,
        req: &MergeRequest,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let merge = Merge {
            policy: &self.policy,
            tenant,
            req,
            idem,
        };
        self.attempts(idem.map(|k| (tenant, k)), Isolation::Locked, &merge)
            .await
    }
}

struct Merge<'a> {
    policy: &'a Policy,
    tenant: &'a TenantId,
    req: &'a MergeRequest,
    idem: Option<&'a IdempotencyKey>,
}

#[async_trait]
impl Attempt for Merge<'_> {
    type Output = Cart;

    async fn run(&self, uow: &mut dyn UnitOfWork) -> Result<Cart, Conflict> {
        let req = self.req;
        let mut ids = vec![req.source];
        ids.extend(req.target);
        let key = self.idem.map(|k| k.key.as_str());
        let mut loaded = uow.load(self.tenant, &ids, key).await?;
        let now = now();
        if let Some(answer) = replay(&mut loaded, self.idem, now) {
            return answer.map_err(Conflict::Failed);
        }
        let mut source = loaded.take(req.source)?;
        let mut target = req.target.map(|t| loaded.take(t)).transpose()?;
        let out = merge(
            &mut source,
            target.as_mut(),
            &req.customer_id,
            req.strategy,
            req.expected_version,
            now,
            self.policy,
        )?;
        let response = out.answer(&source, target.as_ref()).clone();
        let key = self.idem.map(|key| KeyRecord {
            key,
            response: &response,
        });
        uow.save(self.tenant, &write(&source, out.source, now), key)
            .await?;
        if let (Some(t), Some(change)) = (&target, out.target) {
            uow.save(self.tenant, &write(t, change, now), None).await?;
        }
        Ok(response)
    }
}
