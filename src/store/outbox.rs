//! What a callback delivery worker asks of the outbox beyond one row: a
//! claim bounded per endpoint and per tenant, and the backlog's size.

use chrono::{DateTime, Utc};

/// A claim of due callbacks for immediate attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// At most this many rows in all.
    pub limit: usize,
    /// The rows are the caller's until then.
    pub lease_until: DateTime<Utc>,
    /// At most this many rows per endpoint (see [`endpoint_of`]).
    pub endpoints: Budget,
    /// At most this many rows per tenant.
    pub tenants: Budget,
}

/// How many rows one claim may take per key (endpoint or tenant).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budget {
    /// For every key not in `except`.
    pub default: u32,
    /// Keys with a budget of their own (0: none of their rows).
    pub except: Vec<(String, u32)>,
}

impl Budget {
    pub fn of(&self, key: &str) -> u32 {
        self.except
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.default, |(_, n)| *n)
    }

    /// Keys whose rows are not to be claimed at all.
    pub fn closed(&self) -> Vec<&str> {
        self.except
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The (key, budget) pairs as two parallel arrays, for SQL.
    pub fn columns(&self) -> (Vec<&str>, Vec<i64>) {
        self.except
            .iter()
            .map(|(k, n)| (k.as_str(), i64::from(*n)))
            .unzip()
    }
}

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backlog {
    /// Callbacks not yet delivered nor given up (due or waiting to retry).
    pub pending: u64,
    /// Of those, due now (including those being attempted).
    pub due: u64,
    /// When the oldest due one became due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// The endpoint of a callback URL: its authority (`host[:port]`), lower
/// case. Concurrency caps and circuit breakers are per endpoint. The
/// Postgres column `callback_deliveries.endpoint` computes the same.
pub fn endpoint_of(url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return String::new();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_authorities() {
        assert_eq!(
            endpoint_of("https://Pay.Example:8443/ok?x=1"),
            "pay.example:8443"
        );
        assert_eq!(endpoint_of("http://127.0.0.1:9/a/b"), "127.0.0.1:9");
        assert_eq!(endpoint_of("http://h.example#f"), "h.example");
        assert_eq!(endpoint_of("nonsense"), "");
    }

    #[test]
    fn budgets_fall_back_to_the_default() {
        let b = Budget {
            default: 4,
            except: vec![("a".into(), 0), ("b".into(), 2)],
        };
        assert_eq!((b.of("a"), b.of("b"), b.of("c")), (0, 2, 4));
        assert_eq!(b.closed(), ["a"]);
    }
}
