//! API keys: `authorization: Bearer <key>` becomes the caller's tenant.
//!
//! Keys are compared as SHA-256 digests with a constant-time equality over
//! every configured key, so neither the position nor the length of a
//! partial match shows in the timing. Keys are never logged.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use super::status::unauthenticated;
use crate::domain::TenantId;

/// The tenant of open mode (no keys configured).
pub const OPEN_TENANT: &str = "default";

#[derive(Clone)]
pub struct ApiKeyAuth {
    /// (SHA-256 of the key, tenant); empty means open mode.
    keys: Arc<Vec<([u8; 32], TenantId)>>,
}

impl ApiKeyAuth {
    pub fn new(pairs: &[(String, String)]) -> Self {
        let keys = pairs
            .iter()
            .map(|(tenant, key)| {
                (
                    Sha256::digest(key.as_bytes()).into(),
                    TenantId(tenant.clone()),
                )
            })
            .collect();
        ApiKeyAuth {
            keys: Arc::new(keys),
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    fn tenant_of(&self, key: &[u8]) -> Option<TenantId> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (k, tenant) in self.keys.iter() {
            if bool::from(k.ct_eq(&digest)) {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// The tenant of a call's `authorization` value (also used to log calls).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<TenantId, Status> {
        if self.is_open() {
            return Ok(TenantId(OPEN_TENANT.into()));
        }
        let value = authorization
            .ok_or_else(|| unauthenticated("missing authorization: Bearer <api key>"))?;
        let key = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or_else(|| unauthenticated("authorization must be Bearer <api key>"))?;
        self.tenant_of(key)
            .ok_or_else(|| unauthenticated("unknown API key"))
    }
}

impl Interceptor for ApiKeyAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        let tenant = self.authenticate(header)?;
        req.extensions_mut().insert(tenant);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut ApiKeyAuth, header: Option<&str>) -> Result<TenantId, tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req)
            .map(|r| r.extensions().get::<TenantId>().unwrap().clone())
            .map_err(|s| s.code())
    }

    #[test]
    fn keys_map_to_tenants() {
        let mut auth = ApiKeyAuth::new(&[("a".into(), "ka".into()), ("b".into(), "kb".into())]);
        assert_eq!(call(&mut auth, Some("Bearer kb")), Ok(TenantId("b".into())));
        assert_eq!(call(&mut auth, Some("Bearer ka")), Ok(TenantId("a".into())));
        for bad in [
            None,
            Some("Bearer kc"),
            Some("ka"),
            Some("Bearer "),
            Some("Basic ka"),
        ] {
            assert_eq!(
                call(&mut auth, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn open_mode_is_the_default_tenant() {
        let mut auth = ApiKeyAuth::new(&[]);
        assert_eq!(call(&mut auth, None), Ok(TenantId(OPEN_TENANT.into())));
    }
}
