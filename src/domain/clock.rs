//! The service's one clock. Every time a change is stamped with, and every
//! time expiry, retention, idempotency windows and callback schedules are
//! compared with, comes from [`now`]. A store that several replicas share
//! sets the clock to its own ([`follow`]): the Postgres store measures the
//! offset of the database's clock from this machine's and keeps it fresh,
//! so replicas whose clocks disagree (an NTP failure) still agree on time.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// What to add to this machine's clock, in microseconds.
static OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);
/// The last time handed out, in microseconds: time never goes back, even
/// when a new offset is smaller than the last.
static LAST_MICROS: AtomicI64 = AtomicI64::new(i64::MIN);

/// The time now, at microsecond precision as timestamptz keeps it (so that
/// stored documents, columns and page cursors agree exactly), never
/// earlier than a time it answered before.
pub fn now() -> DateTime<Utc> {
    let local = Utc::now().timestamp_micros();
    let t = local.saturating_add(OFFSET_MICROS.load(Ordering::Relaxed));
    let last = LAST_MICROS.fetch_max(t, Ordering::Relaxed);
    DateTime::from_timestamp_micros(t.max(last)).unwrap_or_else(Utc::now)
}

/// Sets the clock to another's: `offset` is how far that clock is ahead of
/// this machine's.
pub fn follow(offset: TimeDelta) {
    let micros = offset.num_microseconds().unwrap_or(0);
    OFFSET_MICROS.store(micros, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_never_goes_back() {
        let a = now();
        let b = now();
        assert!(b >= a);
        assert_eq!(
            b.timestamp_subsec_nanos() % 1000,
            0,
            "microsecond precision"
        );
    }
}
