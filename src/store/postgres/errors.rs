//! Turns Postgres and pool failures into cart errors by SQLSTATE.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::{domain::CartError, ports::Conflict};

/// What a failed statement means for the unit of work that ran it.
pub fn classify(e: tokio_postgres::Error) -> Conflict {
    let Some(db) = e.as_db_error() else {
        return Conflict::Failed(if e.is_closed() || is_io(&e) {
            // No answer from the server: the connection broke or never was.
            CartError::Unavailable(e.to_string())
        } else {
            // Encoding or decoding on our side: a bug, not an outage.
            CartError::internal_from("encoding or decoding a statement", e)
        });
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("idempotency_keys_pkey") {
        Conflict::KeyTaken
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        Conflict::Retry
    } else if *code == SqlState::QUERY_CANCELED {
        // The session's statement_timeout: the store is too slow to answer.
        Conflict::Failed(CartError::Unavailable(format!(
            "{}: {}",
            code.code(),
            db.message()
        )))
    } else if code.code().starts_with("08")
        || code.code().starts_with("57P")
        || code.code().starts_with("53")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        // Connection exceptions, shutdowns, resources exhausted, a replica
        // that cannot write: all of them pass.
        Conflict::Failed(CartError::Unavailable(format!(
            "{}: {}",
            code.code(),
            db.message()
        )))
    } else {
        let what = format!("SQLSTATE {}", code.code());
        Conflict::Failed(CartError::internal_from(what, e))
    }
}

/// For statements outside a unit of work, which the caller does not retry.
pub fn pg(e: tokio_postgres::Error) -> CartError {
    settle(classify(e))
}

/// A unit of work's conflict, for a caller that does not retry.
pub fn settle(c: Conflict) -> CartError {
    match c {
        Conflict::Failed(err) => err,
        Conflict::KeyTaken => CartError::IdempotencyKeyReused,
        Conflict::Raced | Conflict::Retry | Conflict::Stale => {
            CartError::Unavailable("concurrent change; retry".into())
        }
    }
}

/// The same, for a unit of work.
pub fn fail(e: tokio_postgres::Error) -> Conflict {
    classify(e)
}

pub fn pool(e: PoolError) -> CartError {
    match e {
        PoolError::Backend(e) => pg(e),
        other => CartError::Unavailable(other.to_string()),
    }
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
