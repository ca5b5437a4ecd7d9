//! The services' side of authentication: the caller the authentication
//! layer left in the request, and the scope check every RPC makes before
//! any work.

use tonic::{Request, Status};

use super::status::{to_status, unauthenticated};
use crate::domain::{Authentication, Caller, Scope, TenantId};

/// The authenticated caller of a request, or UNAUTHENTICATED.
pub fn caller<T>(req: &Request<T>) -> Result<&Caller, Status> {
    match req.extensions().get::<Authentication>() {
        Some(Authentication(Ok(caller))) => Ok(caller),
        Some(Authentication(Err(why))) => Err(unauthenticated(why)),
        // The layer runs in front of every service; a request without it is a wiring bug.
        None => Err(unauthenticated("not authenticated")),
    }
}

/// The caller's tenant when its key holds `scope`; else UNAUTHENTICATED or
/// PERMISSION_DENIED (`MISSING_SCOPE`, metadata `scope`).
pub fn authorize<T>(req: &Request<T>, scope: Scope) -> Result<TenantId, Status> {
    caller(req)?.require(scope).cloned().map_err(to_status)
}
