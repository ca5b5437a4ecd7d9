//! The delivery loop of one worker. Deliveries run concurrently up to the
//! caps (see `gates`); a claim asks only for what can start at once, and a
//! new claim follows as soon as a slot frees while rows may be waiting, so
//! there is no batch barrier. Between claims the loop sleeps until
//! something may be due: a commit that wrote an outbox row (this replica's
//! own, or another's by NOTIFY), a slot freeing, a retry this worker
//! scheduled, a circuit ready for its probe, or the poll (the safety net).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    CallbackWorker,
    breaker::{Breakers, Health},
    gates::Gates,
};

/// Look for due rows at least this often even when nothing woke us:
/// retries scheduled by other replicas, leases of crashed ones.
const POLL: Duration = Duration::from_millis(500);
/// Pause after a claim failed (the store is down) before the next one.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_millis(250);
/// At most one claim per this interval only to look past keys that filled
/// their share (see below).
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// How often the backlog is sampled for the metrics.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// A lease covers the attempt (its timeout) and this much for recording it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How one attempt ended, for the loop.
pub(super) struct Done {
    pub endpoint: String,
    pub tenant: String,
    pub health: Health,
    /// When it is due again, if it is to be retried.
    pub retry_at: Option<Instant>,
}

/// Runs the loop and the backlog sampler until the task is aborted.
pub(super) async fn run(worker: Arc<CallbackWorker>) {
    tokio::join!(deliver(worker.clone()), sample_backlog(worker));
}

async fn deliver(worker: Arc<CallbackWorker>) {
    let written = worker.outbox.callbacks_written();
    let record = super::record::start(worker.outbox.clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut gates = Gates::new(worker.caps);
    let mut breakers = Breakers::new(worker.breaker);
    let mut timers: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
    // Due rows may be waiting that the last claim could not take.
    let mut more = true;
    let mut polled = Instant::now();
    // When the last claim to look past filled keys was scheduled.
    let mut swept = polled;
    loop {
        if more && gates.free() > 0 {
            let now = Instant::now();
            let lease_until = crate::domain::now() + worker.timeout + LEASE_MARGIN;
            let claim = gates.claim(&breakers, lease_until, now);
            polled = now;
            match worker.outbox.claim_callbacks(&claim).await {
                Ok(batch) => {
                    // A full claim may have left rows behind.
                    more = batch.len() == claim.limit;
                    let mut filled = false;
                    for d in batch {
                        gates.start(&d);
                        breakers.started(&d.endpoint, now);
                        filled |= gates.at_cap(&d) || breakers.budget(&d.endpoint, now) == Some(0);
                        let (w, tx, record) = (worker.clone(), done_tx.clone(), record.clone());
                        tokio::spawn(async move {
                            let _ = tx.send(w.attempt(d, &record).await);
                        });
                    }
                    // So may one that filled a key's share: that key's rows
                    // may have hidden others' among the candidates. A claim
                    // soon leaves it out (soon, not at once: with one busy
                    // endpoint that claim would find nothing, every time).
                    if filled {
                        swept = now.max(swept + SWEEP_EVERY);
                        timers.push(Reverse(swept));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot claim callbacks");
                    more = false;
                    timers.push(Reverse(now + CLAIM_ERROR_PAUSE));
                }
            }
            worker
                .metrics
                .callback_worker(gates.in_flight(), breakers.open_count());
        }
        let now = Instant::now();
        let wake_at = [
            Some(polled + POLL),
            timers.peek().map(|t| t.0),
            breakers.next_probe(now),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + POLL);
        tokio::select! {
            () = written.notified() => more = true,
            Some(done) = done_rx.recv() => {
                // Every attempt that ended meanwhile, before the next claim:
                // one claim refills all the slots they freed.
                let now = Instant::now();
                more |= ended(done, &mut gates, &mut breakers, &mut timers, now);
                while let Ok(done) = done_rx.try_recv() {
                    more |= ended(done, &mut gates, &mut breakers, &mut timers, now);
                }
                worker
                    .metrics
                    .callback_worker(gates.in_flight(), breakers.open_count());
            }
            () = tokio::time::sleep_until(wake_at.into()) => {
                let now = Instant::now();
                while timers.peek().is_some_and(|t| t.0 <= now) {
                    timers.pop();
                }
                more = true;
            }
        }
    }
}

/// Accounts for an attempt that ended; answers whether rows may now be
/// claimable that the last claim had to leave: a slot of a key at its cap,
/// or an answer from an endpoint the breaker limits.
fn ended(
    done: Done,
    gates: &mut Gates,
    breakers: &mut Breakers,
    timers: &mut BinaryHeap<Reverse<Instant>>,
    now: Instant,
) -> bool {
    let limited = breakers.budget(&done.endpoint, now).is_some();
    let freed = gates.finish(&done.endpoint, &done.tenant);
    if breakers.finished(&done.endpoint, done.health, now) {
        tracing::warn!(
            endpoint = done.endpoint.as_str(),
            "callback endpoint keeps failing; backing off"
        );
    }
    if let Some(at) = done.retry_at {
        timers.push(Reverse(at));
    }
    freed || limited
}

/// Samples the outbox into the backlog gauges.
async fn sample_backlog(worker: Arc<CallbackWorker>) {
    loop {
        tokio::time::sleep(BACKLOG_EVERY).await;
        match worker.outbox.callback_backlog().await {
            Ok(b) => {
                let age = b
                    .oldest_due
                    .and_then(|at| (crate::domain::now() - at).to_std().ok())
                    .unwrap_or_default();
                worker.metrics.callback_backlog(b.pending, b.due, age);
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample the callback backlog"),
        }
    }
}
