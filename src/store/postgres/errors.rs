//! Turns Postgres and pool failures into cart errors by SQLSTATE.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::domain::CartError;

/// What a failed statement means for the call that ran it.
#[derive(Debug)]
pub enum PgFailure {
    /// The same idempotency key was recorded by a concurrent call.
    KeyTaken,
    /// Serialization failure or deadlock: the whole call may be run again.
    Retry,
    Error(CartError),
}

pub fn classify(e: &tokio_postgres::Error) -> PgFailure {
    let Some(db) = e.as_db_error() else {
        return PgFailure::Error(if e.is_closed() || is_io(e) {
            // No answer from the server: the connection broke or never was.
            CartError::Unavailable(e.to_string())
        } else {
            // Encoding or decoding on our side: a bug, not an outage.
            CartError::Internal(e.to_string())
        });
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("idempotency_keys_pkey") {
        PgFailure::KeyTaken
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        PgFailure::Retry
    } else if code.code().starts_with("08")
        || code.code().starts_with("57P")
        || code.code().starts_with("53")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        // Connection exceptions, shutdowns, resources exhausted, a replica
        // that cannot write: all of them pass.
        PgFailure::Error(CartError::Unavailable(format!(
            "{}: {}",
            code.code(),
            db.message()
        )))
    } else {
        PgFailure::Error(CartError::Internal(format!(
            "{}: {}",
            code.code(),
            db.message()
        )))
    }
}

impl PgFailure {
    /// For calls that do not retry.
    pub fn into_error(self) -> CartError {
        match self {
            PgFailure::Error(err) => err,
            PgFailure::KeyTaken => CartError::IdempotencyKeyReused,
            PgFailure::Retry => CartError::Unavailable("concurrent change; retry".into()),
        }
    }
}

pub fn pg(e: tokio_postgres::Error) -> CartError {
    classify(&e).into_error()
}

pub fn pool(e: PoolError) -> CartError {
    match e {
        PoolError::Backend(e) => pg(e),
        other => CartError::Unavailable(other.to_string()),
    }
}

// Unused since documents decode straight into Cart (Json<Cart>); kept for
// other decoders of stored JSON.
#[allow(dead_code)]
pub fn json(e: serde_json::Error) -> CartError {
    CartError::Internal(format!("stored cart does not decode: {e}"))
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Connect time-outs and refused connections carry no source of their own.
    e.to_string().contains("connect") || e.to_string().contains("timeout")
}
