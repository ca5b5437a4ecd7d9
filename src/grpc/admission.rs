//! Admission control: a replica works on at most `limit` calls at once
//! and refuses the rest at once with `RESOURCE_EXHAUSTED` / `OVERLOADED`
//! (safe to retry with backoff) instead of queueing them without limit.
//!
//! The limit is fixed (`CART_MAX_IN_FLIGHT`) or adapts to the latency the
//! replica measures (the default): calls queue somewhere (for a pooled
//! connection, a row lock, the CPU) once the replica is past its knee, and
//! then in-flight only adds latency (Little's law: latency = in flight /
//! throughput). Every [`WINDOW`] the mean time admitted calls took is
//! compared with a target (`CART_ADMISSION_TARGET_LATENCY`, 50 ms): above
//! it, while the window ran near its limit (at least half of it in flight
//! at once: a queue, not a few slow calls), the limit becomes throughput x
//! target (the in-flight count at which calls would take the target); at
//! or below it, the limit grows by a tenth. A window near its limit with
//! calls in flight and none finished (a stalled store) halves it. It starts
//! at `max` (a burst on an idle replica is admitted) and stays between
//! `min` and `max`.
//!
//! Fairness: while several tenants have calls in flight, a tenant below
//! its fair share (`limit / active tenants`, or `max / active tenants`
//! while another tenant holds more: `Admission::under_share`) that finds
//! the replica at its limit takes a slot of a reserve (a quarter of the
//! largest limit, `max`), however many calls the others hold; a tenant at
//! or above its share only gets a slot while the replica is under `limit`.
//! So a tenant bursting at 10x cannot take the slots a quiet tenant needs:
//! the quiet tenant's calls are admitted and take turns with the others
//! (`fair_gate`). The reserve is counted apart from `limit` because the
//! limit can fall below what the bursting tenant already holds (its calls
//! were admitted under the old limit): measured against `limit` alone, a
//! quiet tenant was refused until those drained (24 of 2,000 calls in one
//! fairness run).
//!
//! Watch streams are long-lived and have their own cap
//! (`CART_MAX_WATCHERS_PER_TENANT`); health and reflection are never shed.
//!
//! Refusals are answered by `super::admission_layer`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::tenant_counts::TenantCounts;

/// How often an adaptive limit and the retry delay are reconsidered.
const WINDOW: Duration = Duration::from_millis(100);

/// The delays a refusal suggests (RetryInfo), by level: the first while
/// refusals are few, each next one while refusals outnumber a quarter of
/// the calls admitted (see `next_retry_level`).
pub(super) const RETRY_AFTER: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// How the limit is set.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Exactly this many calls at once.
    Fixed(usize),
    /// Between `min` and `max`, from the latency measured against `target`.
    Adaptive {
        min: usize,
        max: usize,
        target: Duration,
    },
}

impl Bound {
    /// The largest the limit can be (where an adaptive limit starts).
    pub fn ceiling(&self) -> usize {
        match *self {
            Bound::Fixed(n) => n,
            Bound::Adaptive { max, .. } => max,
        }
    }
}

pub struct Admission {
    bound: Bound,
    state: Mutex<State>,
}

struct State {
    limit: usize,
    in_flight: usize,
    /// Of those, calls admitted from the reserve.
    reserved: usize,
    /// Calls in flight per tenant; a tenant with none is not listed.
    tenants: TenantCounts,
    /// The current window: when it began, calls finished in it, their total time.
    window_start: Instant,
    done: u32,
    busy: Duration,
    /// The most calls in flight at once in the window.
    peak: usize,
    /// Calls admitted and refused in the window.
    admitted: u32,
    refused: u32,
    /// Index into `RETRY_AFTER` of the delay refusals suggest now.
    retry_level: usize,
}

impl Admission {
    /// A fixed limit of `capacity` calls.
    pub fn new(capacity: usize) -> Arc<Admission> {
        Admission::with_bound(Bound::Fixed(capacity))
    }

    pub fn with_bound(bound: Bound) -> Arc<Admission> {
        let bound = match bound {
            Bound::Fixed(n) => Bound::Fixed(n.max(1)),
            Bound::Adaptive { min, max, target } => {
                let min = min.max(1);
                Bound::Adaptive {
                    min,
                    max: max.max(min),
                    target,
                }
            }
        };
        let limit = bound.ceiling();
        Arc::new(Admission {
            bound,
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                reserved: 0,
                tenants: TenantCounts::default(),
                window_start: Instant::now(),
                done: 0,
                busy: Duration::ZERO,
                peak: 0,
                admitted: 0,
                refused: 0,
                retry_level: 0,
            }),
        })
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one call of `tenant`, or its refusal.
    pub fn try_admit(self: &Arc<Self>, tenant: &str) -> Result<Permit, Refused> {
        let now = Instant::now();
        let mut st = self.lock();
        self.adapt(&mut st, now);
        let reserved = if st.in_flight < st.limit {
            false
        } else if st.reserved < self.reserve() && self.under_share(&st, tenant) {
            true
        } else {
            st.refused += 1;
            return Err(Refused(st.retry_level));
        };
        st.admitted += 1;
        st.in_flight += 1;
        st.reserved += usize::from(reserved);
        st.peak = st.peak.max(st.in_flight);
        st.tenants.add(tenant);
        Ok(Permit {
            admission: self.clone(),
            tenant: tenant.to_string(),
            admitted: now,
            reserved,
        })
    }

    /// Slots a tenant under its share may take past the limit, in all.
    fn reserve(&self) -> usize {
        (self.bound.ceiling() / 4).max(2)
    }

    /// Whether `tenant`, finding the replica at its limit while others have
    /// calls in flight, is under its share: below `limit / active`, or
    /// below `ceiling / active` while another tenant holds more. The second
    /// keeps a quiet tenant's share when the limit collapses toward `min`
    /// (a burst's queue raised latency: 64 / 2 tenants, then 4 / 2, under
    /// what a quiet tenant at a steady rate holds), and never lets the
    /// tenant holding the most take the reserve.
    fn under_share(&self, st: &State, tenant: &str) -> bool {
        let mine = st.tenants.of(tenant);
        let active = st.tenants.len() + usize::from(mine == 0);
        if active < 2 {
            return false;
        }
        if mine < (st.limit / active).max(1) {
            return true;
        }
        mine < self.bound.ceiling() / active && mine < st.tenants.most_except(tenant)
    }

    fn release(&self, tenant: &str, admitted: Instant, reserved: bool) {
        let now = Instant::now();
        let mut st = self.lock();
        st.in_flight -= 1;
        st.reserved -= usize::from(reserved);
        st.tenants.remove(tenant);
        st.done += 1;
        st.busy += now.saturating_duration_since(admitted);
        self.adapt(&mut st, now);
    }

    /// Ends the window when it is due and sets the retry delay and the
    /// (adaptive) limit from it.
    fn adapt(&self, st: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(st.window_start);
        if elapsed < WINDOW {
            return;
        }
        st.retry_level = next_retry_level(st.retry_level, st.admitted, st.refused);
        if let Bound::Adaptive { min, max, target } = self.bound {
            let window = Window {
                done: st.done,
                busy: st.busy,
                peak: st.peak.max(st.in_flight),
                in_flight: st.in_flight,
                elapsed,
            };
            st.limit = next_limit(st.limit, &window, target).clamp(min, max);
        }
        st.admitted = 0;
        st.refused = 0;
        st.window_start = now;
        st.done = 0;
        st.busy = Duration::ZERO;
        st.peak = st.in_flight;
    }
}

/// What one window saw.
struct Window {
    /// Calls finished in it, and the time they took in all.
    done: u32,
    busy: Duration,
    /// The most calls in flight at once, and how many at its end.
    peak: usize,
    in_flight: usize,
    elapsed: Duration,
}

/// The limit after window `w`. It only comes down on evidence of queueing:
/// calls slower than `target` while the window ran near its limit (a few
/// slow calls on a quiet replica are slow calls, not a queue).
fn next_limit(limit: usize, w: &Window, target: Duration) -> usize {
    let near_limit = 2 * w.peak >= limit;
    if w.done == 0 {
        // Nothing finished: stuck (halve), or idle (keep).
        return if near_limit && w.in_flight > 0 {
            limit / 2
        } else {
            limit
        };
    }
    let mean = w.busy / w.done;
    if mean <= target {
        limit + (limit / 10).max(1)
    } else if near_limit {
        // Little's law: at this throughput, calls take `target` with this many in flight.
        let throughput = f64::from(w.done) / w.elapsed.as_secs_f64();
        (throughput * target.as_secs_f64()).ceil() as usize
    } else {
        limit
    }
}

/// The retry delay after a window that admitted `admitted` calls and
/// refused `refused`: one level longer while refusals outnumber a quarter
/// of the admissions, one shorter once they are a sixteenth or fewer. A
/// refusal costs the replica about a sixth of a write (HTTP/2 and two
/// system calls: ~37 us against ~200; BENCHMARKS.md, overload run 2) and
/// its client as much again, so under a sustained burst clients that
/// honour RetryInfo stop spending on refusals the CPU that admitted calls
/// need; a burst's end brings the delay back down within a few windows.
fn next_retry_level(level: usize, admitted: u32, refused: u32) -> usize {
    if refused > admitted / 4 {
        (level + 1).min(RETRY_AFTER.len() - 1)
    } else if refused <= admitted / 16 {
        level.saturating_sub(1)
    } else {
        level
    }
}

/// A refused call: the delay to suggest before it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(usize);

impl Refused {
    pub fn retry_after(self) -> Duration {
        RETRY_AFTER[self.0]
    }

    /// Its index into `RETRY_AFTER`.
    pub(super) fn level(self) -> usize {
        self.0
    }
}

/// One admitted call; frees its slot when dropped (answered or abandoned).
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
    admitted: Instant,
    /// Taken from the reserve of tenants under their share.
    reserved: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission
            .release(&self.tenant, self.admitted, self.reserved);
    }
}

/// Calls admission applies to: unary calls of the cart services.
pub(super) fn is_bounded(path: &str) -> bool {
    let cart = path.starts_with("/cart.v1.CartService/") || path.starts_with("/hipstershop.");
    cart && !path.ends_with("/WatchCart") && !path.ends_with("/WatchCarts")
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
