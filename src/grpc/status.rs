//! The one place where cart errors become gRPC statuses: the code, a
//! message, `google.rpc.ErrorInfo` (domain `cart.v1`, the contract's reason)
//! and, for bad input, `google.rpc.BadRequest` naming every bad field.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::{CartError, Compacted, Reason};

pub const ERROR_DOMAIN: &str = "cart.v1";

pub fn to_status(err: CartError) -> Status {
    let reason = err.reason();
    let mut details = ErrorDetails::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    let code = match &err {
        CartError::Invalid(violations) => {
            if let Some(first) = violations.first() {
                meta.insert("field".into(), first.field.clone());
            }
            let wire: Vec<FieldViolation> = violations
                .iter()
                .map(|v| {
                    let mut w = FieldViolation::new(&v.field, &v.description);
                    w.reason = v.reason.as_str().to_string();
                    w
                })
                .collect();
            details.set_bad_request(wire);
            Code::InvalidArgument
        }
        CartError::IdempotencyKeyReused => {
            details.add_bad_request_violation(
                "request_id",
                "was already used for a different request",
            );
            Code::InvalidArgument
        }
        CartError::CartNotFound => Code::NotFound,
        CartError::ItemNotFound { sku } => {
            meta.insert("sku".into(), sku.clone());
            Code::NotFound
        }
        CartError::NotEditable { status } | CartError::InvalidTransition { status, .. } => {
            meta.insert("status".into(), format!("CART_STATUS_{status}"));
            Code::FailedPrecondition
        }
        CartError::Precondition(v) => {
            meta.insert("field".into(), v.field.clone());
            Code::FailedPrecondition
        }
        CartError::TotalMismatch { expected, actual } => {
            meta.insert("expected_total".into(), expected.clone());
            meta.insert("total".into(), actual.clone());
            Code::FailedPrecondition
        }
        CartError::VersionMismatch { expected, actual } => {
            meta.insert("expected_version".into(), expected.to_string());
            meta.insert("version".into(), actual.to_string());
            Code::Aborted
        }
        CartError::Empty | CartError::TooManyItems { .. } | CartError::CustomerMismatch(_) => {
            Code::FailedPrecondition
        }
        CartError::ReferenceTaken(_) => Code::AlreadyExists,
        CartError::Unauthenticated => Code::Unauthenticated,
        CartError::MissingScope(scope) => {
            meta.insert("scope".into(), scope.as_str().into());
            Code::PermissionDenied
        }
        CartError::Overloaded { retry_after } => {
            details.set_retry_info(Some(*retry_after));
            Code::ResourceExhausted
        }
        CartError::TooManyWatchers { limit } => {
            meta.insert("limit".into(), limit.to_string());
            Code::ResourceExhausted
        }
        CartError::DeadlineExceeded => Code::DeadlineExceeded,
        CartError::CartTooLarge { bytes, limit } => {
            meta.insert("bytes".into(), bytes.to_string());
            meta.insert("limit".into(), limit.to_string());
            Code::FailedPrecondition
        }
        CartError::EventsCompacted(at) => {
            match at {
                Compacted::Through(s) => meta.insert("compacted_through".into(), s.to_string()),
                Compacted::OldestVersion(v) => meta.insert("oldest_version".into(), v.to_string()),
            };
            Code::OutOfRange
        }
        CartError::Unavailable(e) => {
            tracing::warn!(error = %e, "store unavailable");
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            Code::Unavailable
        }
        CartError::Internal(e) => {
            let cause = std::error::Error::source(e).map(|c| format!("{c:?}"));
            tracing::error!(error = %e, cause, "internal error");
            Code::Internal
        }
    };
    let message = match &err {
        CartError::Unavailable(_) => "the cart store is unavailable; retry".to_string(),
        CartError::Internal(_) => "internal error".to_string(),
        other => other.to_string(),
    };
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, meta);
    Status::with_error_details(code, message, details)
}

/// UNAUTHENTICATED with its ErrorInfo, for the interceptor.
pub fn unauthenticated(why: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        Reason::Unauthenticated.as_str(),
        ERROR_DOMAIN,
        HashMap::new(),
    );
    Status::with_error_details(Code::Unauthenticated, why, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation as Violation;

    #[test]
    fn invalid_input_names_every_field() {
        let err = CartError::Invalid(vec![
            Violation::new("items[0].unit_price", Reason::InvalidAmount, "bad"),
            Violation::new("currency", Reason::InvalidCurrency, "bad"),
        ]);
        let status = to_status(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_AMOUNT", "cart.v1")
        );
        let fields: Vec<_> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["items[0].unit_price", "currency"]);
    }

    #[test]
    fn codes_follow_the_contract() {
        let cases = [
            (CartError::CartNotFound, Code::NotFound),
            (
                CartError::VersionMismatch {
                    expected: 1,
                    actual: 2,
                },
                Code::Aborted,
            ),
            (CartError::ReferenceTaken("r".into()), Code::AlreadyExists),
            (CartError::IdempotencyKeyReused, Code::InvalidArgument),
            (CartError::Empty, Code::FailedPrecondition),
            (CartError::Unavailable("x".into()), Code::Unavailable),
            (CartError::internal("x"), Code::Internal),
        ];
        for (err, code) in cases {
            let reason = err.reason();
            let status = to_status(err);
            if code == Code::Internal {
                assert_eq!(
                    reason.as_str(),
                    "INTERNAL",
                    "its own reason, not the store's"
                );
                assert_eq!(status.message(), "internal error", "no detail to callers");
            }
            assert_eq!(status.code(), code);
            assert_eq!(
                status.get_details_error_info().unwrap().reason,
                reason.as_str()
            );
        }
    }
}
