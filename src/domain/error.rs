//! Everything that can go wrong with a cart call. `grpc::status` is the one
//! place that turns these into wire codes.

use std::{fmt, sync::Arc, time::Duration};

use super::caller::Scope;

/// The `google.rpc.ErrorInfo` reasons of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidCurrency,
    InvalidCountry,
    InvalidAmount,
    InvalidQuantity,
    InvalidSku,
    InvalidField,
    CartNotFound,
    ItemNotFound,
    CartNotEditable,
    CartEmpty,
    InvalidTransition,
    TooManyItems,
    TotalMismatch,
    VersionMismatch,
    ReferenceTaken,
    IdempotencyKeyReused,
    CustomerMismatch,
    Unauthenticated,
    StoreUnavailable,
    /// A bug or an unexpected answer from the store: not the caller's doing.
    Internal,
    MissingScope,
    Overloaded,
    TooManyWatchers,
    DeadlineExceeded,
    CartTooLarge,
    EventsCompacted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidCurrency => "INVALID_CURRENCY",
            Reason::InvalidCountry => "INVALID_COUNTRY",
            Reason::InvalidAmount => "INVALID_AMOUNT",
            Reason::InvalidQuantity => "INVALID_QUANTITY",
            Reason::InvalidSku => "INVALID_SKU",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::CartNotFound => "CART_NOT_FOUND",
            Reason::ItemNotFound => "ITEM_NOT_FOUND",
            Reason::CartNotEditable => "CART_NOT_EDITABLE",
            Reason::CartEmpty => "CART_EMPTY",
            Reason::InvalidTransition => "INVALID_TRANSITION",
            Reason::TooManyItems => "TOO_MANY_ITEMS",
            Reason::TotalMismatch => "TOTAL_MISMATCH",
            Reason::VersionMismatch => "VERSION_MISMATCH",
            Reason::ReferenceTaken => "REFERENCE_TAKEN",
            Reason::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Reason::CustomerMismatch => "CUSTOMER_MISMATCH",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::Internal => "INTERNAL",
            Reason::MissingScope => "MISSING_SCOPE",
            Reason::Overloaded => "OVERLOADED",
            Reason::TooManyWatchers => "TOO_MANY_WATCHERS",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::CartTooLarge => "CART_TOO_LARGE",
            Reason::EventsCompacted => "EVENTS_COMPACTED",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bad field of a request: the field path as the caller wrote it
/// (`items[2].unit_price`), why, and the reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: Reason,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, reason: Reason, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            reason,
            description: description.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// Bad input; never empty.
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    #[error("cart not found")]
    CartNotFound,
    #[error("item {sku:?} is not in the cart")]
    ItemNotFound { sku: String },
    #[error("cart is {status} and cannot be changed")]
    NotEditable { status: &'static str },
    #[error("cart has no items")]
    Empty,
    #[error("cannot {action} a cart that is {status}")]
    InvalidTransition {
        action: &'static str,
        status: &'static str,
    },
    #[error("{}: {}", .0.field, .0.description)]
    Precondition(FieldViolation),
    #[error("cart would have {lines} lines, more than the limit of {limit}")]
    TooManyItems { lines: usize, limit: usize },
    #[error("expected total {expected} but the cart totals {actual}")]
    TotalMismatch { expected: String, actual: String },
    #[error("expected version {expected} but the cart is at version {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("reference {0:?} is already used by another cart")]
    ReferenceTaken(String),
    #[error("request_id was already used for a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    CustomerMismatch(String),
    #[error("missing or unknown API key")]
    Unauthenticated,
    #[error("the API key lacks the scope {0:?} this call needs")]
    MissingScope(Scope),
    /// `retry_after`: the delay the replica suggests before a retry.
    #[error("the service is over capacity; retry with backoff")]
    Overloaded { retry_after: Duration },
    #[error("this tenant already has {limit} watch streams open on this replica")]
    TooManyWatchers { limit: usize },
    #[error("the deadline passed before the call could be worked on")]
    DeadlineExceeded,
    #[error("the cart would encode to {bytes} bytes, more than the limit of {limit}")]
    CartTooLarge { bytes: usize, limit: usize },
    #[error("{0}")]
    EventsCompacted(Compacted),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected store answer; logged in full, never detailed to callers.
    #[error("internal error: {0}")]
    Internal(#[source] InternalError),
}

/// Where the retention sweep cut a resume point's history (see the
/// contract's Retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacted {
    /// Every event with a sequence at or below this one is gone.
    Through(i64),
    /// The oldest version of the cart still held.
    OldestVersion(i64),
}

impl fmt::Display for Compacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compacted::Through(s) => write!(
                f,
                "events up to sequence {s} were deleted; resume with after_sequence >= {s}, or 0 for from now on"
            ),
            Compacted::OldestVersion(v) => write!(
                f,
                "versions before {v} were deleted; watch again without after_version for the cart as it stands"
            ),
        }
    }
}

/// What went wrong inside, for the log: a description and, when another
/// error caused it, that error itself (so the log shows its whole chain).
#[derive(Debug, Clone)]
pub struct InternalError {
    description: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl InternalError {
    pub fn caused_by(
        description: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        InternalError {
            description: description.into(),
            cause: Some(Arc::new(cause)),
        }
    }
}

impl fmt::Display for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for InternalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Equal when they say the same (the cause is for the log).
impl PartialEq for InternalError {
    fn eq(&self, other: &Self) -> bool {
        self.description == other.description
    }
}

impl Eq for InternalError {}

impl CartError {
    /// An internal error with no other error behind it.
    pub fn internal(description: impl Into<String>) -> Self {
        CartError::Internal(InternalError {
            description: description.into(),
            cause: None,
        })
    }

    /// An internal error caused by `cause`.
    pub fn internal_from(
        description: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CartError::Internal(InternalError::caused_by(description, cause))
    }

    pub fn invalid(
        field: impl Into<String>,
        reason: Reason,
        description: impl Into<String>,
    ) -> Self {
        CartError::Invalid(vec![FieldViolation::new(field, reason, description)])
    }

    pub fn reason(&self) -> Reason {
        match self {
            CartError::Invalid(v) => v.first().map_or(Reason::InvalidField, |v| v.reason),
            CartError::CartNotFound => Reason::CartNotFound,
            CartError::ItemNotFound { .. } => Reason::ItemNotFound,
            CartError::NotEditable { .. } => Reason::CartNotEditable,
            CartError::Empty => Reason::CartEmpty,
            CartError::InvalidTransition { .. } => Reason::InvalidTransition,
            CartError::Precondition(v) => v.reason,
            CartError::TooManyItems { .. } => Reason::TooManyItems,
            CartError::TotalMismatch { .. } => Reason::TotalMismatch,
            CartError::VersionMismatch { .. } => Reason::VersionMismatch,
            CartError::ReferenceTaken(_) => Reason::ReferenceTaken,
            CartError::IdempotencyKeyReused => Reason::IdempotencyKeyReused,
            CartError::CustomerMismatch(_) => Reason::CustomerMismatch,
            CartError::Unauthenticated => Reason::Unauthenticated,
            CartError::MissingScope(_) => Reason::MissingScope,
            CartError::Overloaded { .. } => Reason::Overloaded,
            CartError::TooManyWatchers { .. } => Reason::TooManyWatchers,
            CartError::DeadlineExceeded => Reason::DeadlineExceeded,
            CartError::CartTooLarge { .. } => Reason::CartTooLarge,
            CartError::EventsCompacted(_) => Reason::EventsCompacted,
            CartError::Unavailable(_) => Reason::StoreUnavailable,
            CartError::Internal(_) => Reason::Internal,
        }
    }
}

/// Collects field violations while a request is checked, so that one answer
/// names every bad field instead of the first.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn push(&mut self, v: FieldViolation) {
        self.0.push(v);
    }

    /// Keeps the value when `r` is Ok, records the violation otherwise.
    pub fn check<T>(&mut self, r: Result<T, FieldViolation>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), CartError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CartError::Invalid(self.0))
        }
    }
}
