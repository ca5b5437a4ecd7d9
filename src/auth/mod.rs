//! Authentication: `authorization: Bearer <key>` becomes the caller (tenant
//! and scopes), once per call, in a tower layer in front of every service.
//!
//! Keys are compared as SHA-256 digests with a constant-time equality over
//! every configured key, so neither the position nor the length of a
//! partial match shows in the timing. Keys are never logged.
//!
//! The keys of `CART_API_KEYS_FILE` are re-read while the server runs
//! ([`reload`]); each call sees one whole snapshot of the table, swapped
//! atomically under a lock held only to clone an `Arc`.

pub mod keys;
pub mod layer;
pub mod reload;

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::keys::{KeyEntry, check_unique};
use crate::{
    domain::{AuthFailure, Caller, Scopes, TenantId},
    metrics::Metrics,
};

/// The tenant of open mode (no keys configured).
pub const OPEN_TENANT: &str = "default";

/// One snapshot of the keys: (SHA-256 of the key, caller).
struct KeyTable(Vec<([u8; 32], Caller)>);

impl KeyTable {
    fn new(entries: &[KeyEntry]) -> KeyTable {
        KeyTable(
            entries
                .iter()
                .map(|e| {
                    let caller = Caller {
                        tenant: TenantId(e.tenant.clone()),
                        scopes: e.scopes,
                    };
                    (Sha256::digest(e.key.as_bytes()).into(), caller)
                })
                .collect(),
        )
    }

    fn find(&self, key: &[u8]) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (k, caller) in &self.0 {
            if bool::from(k.ct_eq(&digest)) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

pub struct Authenticator {
    /// Open mode: no keys given at all (neither list nor file).
    open: bool,
    /// Keys of `CART_API_KEYS`, fixed for the life of the process.
    fixed: Vec<KeyEntry>,
    table: RwLock<Arc<KeyTable>>,
    metrics: Metrics,
}

impl Authenticator {
    /// `file`: the entries of `CART_API_KEYS_FILE` when it is configured
    /// (even empty, a configured file means the server is not open).
    pub fn new(
        fixed: Vec<KeyEntry>,
        file: Option<Vec<KeyEntry>>,
        metrics: Metrics,
    ) -> Result<Authenticator, String> {
        let open = fixed.is_empty() && file.is_none();
        let auth = Authenticator {
            open,
            fixed,
            table: RwLock::new(Arc::new(KeyTable(Vec::new()))),
            metrics,
        };
        auth.replace_file_keys(file.unwrap_or_default())?;
        Ok(auth)
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Swaps in the file's keys (with the fixed ones); on error nothing changes.
    pub fn replace_file_keys(&self, file: Vec<KeyEntry>) -> Result<usize, String> {
        let mut all = self.fixed.clone();
        all.extend(file);
        check_unique(&all)?;
        let table = Arc::new(KeyTable::new(&all));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        Ok(all.len())
    }

    fn snapshot(&self) -> Arc<KeyTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The caller of an `authorization` value. Every call is authenticated
    /// here exactly once (counted in `cart_authentications_total`).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        let result = self.resolve(authorization);
        self.metrics.authenticated(result.is_ok());
        result
    }

    fn resolve(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        if self.open {
            return Ok(Caller {
                tenant: TenantId(OPEN_TENANT.into()),
                scopes: Scopes::EVERY,
            });
        }
        let value = authorization.ok_or("missing authorization: Bearer <api key>")?;
        let key = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or("authorization must be Bearer <api key>")?;
        self.snapshot().find(key).ok_or("unknown API key")
    }
}

/// A shared authenticator.
pub type SharedAuth = Arc<Authenticator>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    fn entry(t: &str, k: &str, scopes: Scopes) -> KeyEntry {
        KeyEntry {
            tenant: t.into(),
            key: k.into(),
            scopes,
        }
    }

    #[test]
    fn keys_map_to_callers() {
        let customer = Scopes::of(&[Scope::Customer]);
        let auth = Authenticator::new(
            vec![entry("a", "ka", Scopes::EVERY), entry("b", "kb", customer)],
            None,
            Metrics::new(),
        )
        .unwrap();
        let caller = auth.authenticate(Some(b"Bearer kb")).unwrap();
        assert_eq!((caller.tenant.as_str(), caller.scopes), ("b", customer));
        assert_eq!(auth.authenticate(Some(b"Bearer ka")).unwrap().tenant.0, "a");
        for bad in [
            None,
            Some(&b"Bearer kc"[..]),
            Some(b"ka"),
            Some(b"Bearer "),
            Some(b"Basic ka"),
        ] {
            assert!(auth.authenticate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn open_mode_is_the_default_tenant_with_every_scope() {
        let auth = Authenticator::new(Vec::new(), None, Metrics::new()).unwrap();
        let caller = auth.authenticate(None).unwrap();
        assert_eq!(caller.tenant.0, OPEN_TENANT);
        assert_eq!(caller.scopes, Scopes::EVERY);
        // A configured key file, even empty, is never open.
        let closed = Authenticator::new(Vec::new(), Some(Vec::new()), Metrics::new()).unwrap();
        assert!(closed.authenticate(None).is_err());
    }

    #[test]
    fn file_keys_are_swapped_whole_or_not_at_all() {
        let fixed = vec![entry("a", "ka", Scopes::EVERY)];
        let auth = Authenticator::new(fixed, Some(vec![]), Metrics::new()).unwrap();
        auth.replace_file_keys(vec![entry("b", "kb", Scopes::EVERY)])
            .unwrap();
        assert!(auth.authenticate(Some(b"Bearer kb")).is_ok());
        // A file repeating a fixed key is refused; the previous table stays.
        let dup = vec![
            entry("c", "kc", Scopes::EVERY),
            entry("x", "ka", Scopes::EVERY),
        ];
        assert!(auth.replace_file_keys(dup).is_err());
        assert!(auth.authenticate(Some(b"Bearer kb")).is_ok());
        assert!(auth.authenticate(Some(b"Bearer kc")).is_err());
    }
}
