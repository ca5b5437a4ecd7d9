//! The soak's watchers and what they check.
//!
//! - WatchCart watchers each follow one seeded cart, leave after 1-5 s and
//!   come back with `after_version` = the last version they saw: versions
//!   must arrive consecutive (a gap is a missed event, a step back a
//!   repeated one).
//! - WatchCarts watchers start before any write of the run, leave after
//!   2-10 s and come back with `after_sequence` = the last sequence seen:
//!   sequences must rise, each cart's versions must arrive consecutive, and
//!   at the end every version the server acknowledged to a writer must have
//!   been seen, exactly once.

use std::collections::HashMap;

use tokio::task::JoinHandle;

use super::*;
use crate::soak_load::Shared;

/// Missed and repeated events, by watcher kind.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) cart_missed: AtomicU64,
    pub(crate) cart_repeated: AtomicU64,
    pub(crate) cart_streams: AtomicU64,
    /// WatchCart watchers that could not catch up with their cart at the end.
    pub(crate) cart_behind: AtomicU64,
    pub(crate) tenant_missed: AtomicU64,
    pub(crate) tenant_repeated: AtomicU64,
    pub(crate) tenant_streams: AtomicU64,
    /// WatchCarts watchers whose first stream is open (the writes wait for them).
    pub(crate) tenant_ready: AtomicU64,
}

fn is_final(status: i32) -> bool {
    use proto::CartStatus as S;
    [S::Confirmed, S::Cancelled, S::Expired, S::Merged]
        .iter()
        .any(|s| *s as i32 == status)
}

/// Records commit-to-receipt latency of live events (those that happened
/// after the stream opened; a replay's age is the reconnect gap, not latency).
fn live_latency(shared: &Shared, ev: &proto::CartEvent, opened: SystemTime, started: Instant) {
    shared.events.fetch_add(1, Ordering::Relaxed);
    shared
        .last_event
        .store(started.elapsed().as_secs() as i64, Ordering::Relaxed);
    let Some(t) = &ev.occurred_at else { return };
    let at = timestamp_to_system(t);
    if at >= opened
        && let Ok(d) = SystemTime::now().duration_since(at)
    {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        shared.watch_window.lock().unwrap().record(us).ok();
    }
}

/// Checks that `version` follows `last` on one cart; answers the new last.
fn follow(last: i64, version: i64, missed: &AtomicU64, repeated: &AtomicU64) -> i64 {
    if last == 0 || version == last + 1 {
        version
    } else if version <= last {
        repeated.fetch_add(1, Ordering::Relaxed);
        last
    } else {
        missed.fetch_add((version - last - 1) as u64, Ordering::Relaxed);
        version
    }
}

pub(crate) fn cart_watchers(
    ctx: &Arc<Ctx>,
    shared: &Arc<Shared>,
    tally: &Arc<Tally>,
    channels: &[Channel],
    n: usize,
    started: Instant,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (ctx, shared, tally) = (ctx.clone(), shared.clone(), tally.clone());
            let mut c = CartServiceClient::new(channels[w % channels.len()].clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(ctx.args.seed ^ (0xca27_0000 + w as u64));
                let mut cart = ctx.carts[w % ctx.carts.len()].clone();
                let mut last = 0i64;
                loop {
                    let stopping = shared.stop_watch.load(Ordering::Relaxed);
                    let target = stopping.then(|| {
                        let acked = shared.acked.lock().unwrap();
                        acked.get(&cart).map_or(0, |a| a.max)
                    });
                    if target.is_some_and(|t| last >= t) {
                        break;
                    }
                    let hold = match target {
                        Some(_) => Duration::from_secs(30),
                        None => Duration::from_millis(1000 + rng.below(4000) as u64),
                    };
                    let opened = SystemTime::now();
                    let req = ctx.req(proto::WatchCartRequest {
                        cart_id: cart.clone(),
                        after_version: last,
                    });
                    let mut stream = match c.watch_cart(req).await {
                        Ok(r) => r.into_inner(),
                        Err(e) => {
                            shared.error("watch-cart-open", e.code());
                            if stopping {
                                tally.cart_behind.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    tally.cart_streams.fetch_add(1, Ordering::Relaxed);
                    let deadline = Instant::now() + hold;
                    loop {
                        let m = tokio::select! {
                            m = stream.message() => m,
                            () = tokio::time::sleep_until(deadline.into()) => break,
                        };
                        match m {
                            Ok(Some(ev)) => {
                                live_latency(&shared, &ev, opened, started);
                                last = follow(
                                    last,
                                    ev.version,
                                    &tally.cart_missed,
                                    &tally.cart_repeated,
                                );
                                if is_final(ev.status) {
                                    // Not expected of a seeded cart; follow another.
                                    cart = ctx.carts[rng.below(ctx.carts.len())].clone();
                                    last = 0;
                                    break;
                                }
                                if target.is_some_and(|t| last >= t) {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                shared.error("watch-cart", e.code());
                                break;
                            }
                        }
                    }
                    // Dropping `stream` here is the client leaving.
                    if target.is_some_and(|t| last < t) {
                        tally.cart_behind.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            })
        })
        .collect()
}

/// Per cart: the first and the last version a WatchCarts watcher saw.
type Seen = HashMap<String, (i64, i64)>;

pub(crate) fn tenant_watchers(
    ctx: &Arc<Ctx>,
    shared: &Arc<Shared>,
    tally: &Arc<Tally>,
    channels: &[Channel],
    n: usize,
    started: Instant,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (ctx, shared, tally) = (ctx.clone(), shared.clone(), tally.clone());
            let mut c = CartServiceClient::new(channels[w % channels.len()].clone())
                .max_decoding_message_size(16 * 1024 * 1024);
            tokio::spawn(async move {
                let mut rng = Rng::new(ctx.args.seed ^ (0x7e4a_0000 + w as u64));
                let mut cursor = 0i64;
                let mut seen = Seen::new();
                let mut first = true;
                let mut stop_deadline = None;
                loop {
                    if shared.stop_watch.load(Ordering::Relaxed) {
                        let deadline =
                            *stop_deadline.get_or_insert(Instant::now() + Duration::from_secs(60));
                        if caught_up(&shared, &seen) || Instant::now() > deadline {
                            break;
                        }
                    }
                    let hold = Duration::from_millis(2000 + rng.below(8000) as u64);
                    let opened = SystemTime::now();
                    let req = ctx.req(proto::WatchCartsRequest {
                        statuses: vec![],
                        after_sequence: cursor,
                        ..Default::default()
                    });
                    let mut stream = match c.watch_carts(req).await {
                        Ok(r) => r.into_inner(),
                        Err(e) => {
                            shared.error("watch-carts-open", e.code());
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    if std::mem::take(&mut first) {
                        tally.tenant_ready.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.tenant_streams.fetch_add(1, Ordering::Relaxed);
                    let deadline = Instant::now() + hold;
                    loop {
                        let m = tokio::select! {
                            m = stream.message() => m,
                            () = tokio::time::sleep_until(deadline.into()) => break,
                        };
                        match m {
                            Ok(Some(ev)) => {
                                live_latency(&shared, &ev, opened, started);
                                if ev.sequence <= cursor {
                                    tally.tenant_repeated.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                cursor = ev.sequence;
                                let e = seen.entry(ev.cart_id).or_insert((ev.version, 0));
                                e.1 = follow(
                                    e.1,
                                    ev.version,
                                    &tally.tenant_missed,
                                    &tally.tenant_repeated,
                                );
                            }
                            Ok(None) => break,
                            Err(e) => {
                                shared.error("watch-carts", e.code());
                                break;
                            }
                        }
                    }
                }
                let (missed, _) = shortfall(&shared, &seen);
                tally.tenant_missed.fetch_add(missed, Ordering::Relaxed);
            })
        })
        .collect()
}

fn caught_up(shared: &Shared, seen: &Seen) -> bool {
    shortfall(shared, seen).0 == 0
}

/// Acknowledged versions this watcher never saw (before the first version
/// it saw of a cart, or after the last), and the carts they are on.
fn shortfall(shared: &Shared, seen: &Seen) -> (u64, u64) {
    let acked = shared.acked.lock().unwrap();
    let (mut missed, mut carts) = (0u64, 0u64);
    for (id, a) in acked.iter() {
        let m = match seen.get(id) {
            None => a.max - a.min + 1,
            Some(&(first, last)) => (first - a.min).max(0) + (a.max - last).max(0),
        };
        if m > 0 {
            missed += m as u64;
            carts += 1;
        }
    }
    (missed, carts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_counts_gaps_as_missed_and_steps_back_as_repeated() {
        let (missed, repeated) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut last = 0;
        for v in [5, 6, 7, 7, 6, 10, 11] {
            last = follow(last, v, &missed, &repeated);
        }
        assert_eq!(last, 11);
        assert_eq!(missed.load(Ordering::Relaxed), 2); // 8 and 9
        assert_eq!(repeated.load(Ordering::Relaxed), 2); // 7 again, then 6
    }

    #[test]
    fn shortfall_counts_acknowledged_versions_never_seen() {
        let shared = Shared::new();
        {
            let mut acked = shared.acked.lock().unwrap();
            acked.insert("a".into(), crate::soak_load::Acked { min: 2, max: 9 });
            acked.insert("b".into(), crate::soak_load::Acked { min: 1, max: 3 });
            acked.insert("c".into(), crate::soak_load::Acked { min: 4, max: 4 });
        }
        let mut seen = Seen::new();
        seen.insert("a".into(), (3, 8)); // 2 and 9 missing
        seen.insert("b".into(), (1, 3));
        assert_eq!(shortfall(&shared, &seen), (3, 2)); // and c's 4
        seen.insert("a".into(), (1, 10));
        seen.insert("c".into(), (4, 4));
        assert!(caught_up(&shared, &seen));
    }
}
