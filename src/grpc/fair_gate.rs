//! Admitted calls take turns, fairly between tenants. At most `slots`
//! admitted calls run at once (the Postgres pool: past it a call would
//! only wait for a connection); the others wait here, and each freed slot
//! goes to the next tenant in turn that has a call waiting, not to the
//! oldest waiting call. Without it the pool's own queue is first come,
//! first served, and a quiet tenant's call waited behind every call a
//! bursting tenant had admitted (measured: 200 calls/s of one tenant went
//! from a p99 of 15 ms alone to 1.7 s beside 640 clients of another).
//!
//! While other tenants have called in the last [`ACTIVE_FOR`], a tenant
//! runs at most half the slots, even when the rest are free. Turns alone
//! kept the quiet tenant's calls from waiting for a slot, but not from
//! running beside a full pool of the bursting tenant's: Postgres then
//! shares its CPU among `slots` statements, and the quiet tenant's p99
//! was 4-11x its p99 alone; with half the slots to the bursting tenant,
//! about 2-3x (BENCHMARKS.md, issue 12). Two busy tenants still fill every
//! slot; a tenant alone has them all.
//!
//! Admission (`admission.rs`) decides how many calls wait at all; this
//! only orders them. The wait is inside the deadline layer: a call whose
//! deadline passes while it waits is dropped like any other waiting call.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};
use tonic::codegen::http::{Request, Response};

use super::{
    admission::is_bounded,
    around::{Around, AroundLayer, BoxFuture},
    deadline::tenant_of,
    tenant_counts::TenantCounts,
};

/// How long a tenant counts as active after its last call.
pub const ACTIVE_FOR: Duration = Duration::from_secs(1);

pub struct FairGate {
    slots: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    /// Running calls per tenant; a tenant with none is not listed.
    running_by: TenantCounts,
    /// Waiting calls per tenant, oldest first (a dropped call's sender
    /// stays until its turn comes, and is skipped then).
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with calls waiting, in the order their turns come.
    turns: VecDeque<String>,
    /// When each tenant last called, for as long as it counts as active.
    seen: HashMap<String, Instant>,
    /// When `seen` was last cleared of tenants no longer active.
    pruned: Option<Instant>,
}

impl State {
    /// Notes a call of `tenant` at `now`.
    fn saw(&mut self, tenant: &str, now: Instant) {
        match self.seen.get_mut(tenant) {
            Some(at) => *at = now,
            None => {
                self.seen.insert(tenant.to_string(), now);
            }
        }
        self.prune(now);
    }

    /// Forgets tenants quiet for longer than [`ACTIVE_FOR`], at most every
    /// quarter of it (cheap per call; a share is that much late at most).
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) >= ACTIVE_FOR / 4)
        {
            self.seen
                .retain(|_, at| now.duration_since(*at) < ACTIVE_FOR);
            self.pruned = Some(now);
        }
    }

    /// Whether a call of `tenant` may run now as far as its share goes.
    fn under_share(&self, tenant: &str, slots: usize) -> bool {
        let others = match self.seen.len() {
            0 => false,
            1 => !self.seen.contains_key(tenant),
            _ => true,
        };
        let share = if others { (slots / 2).max(1) } else { slots };
        self.running_by.of(tenant) < share
    }

    fn start(&mut self, tenant: &str) {
        self.running += 1;
        self.running_by.add(tenant);
    }

    fn stop(&mut self, tenant: &str) {
        self.running -= 1;
        self.running_by.remove(tenant);
    }
}

impl FairGate {
    pub fn new(slots: usize) -> Arc<FairGate> {
        Arc::new(FairGate {
            slots: slots.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot for a call of `tenant`; the slot is freed when the
    /// returned turn is dropped.
    pub async fn turn(self: &Arc<Self>, tenant: impl Into<String>) -> Turn {
        let tenant = tenant.into();
        let rx = {
            let mut st = self.lock();
            st.saw(&tenant, Instant::now());
            let queued = st.waiting.contains_key(&tenant);
            if st.running < self.slots && !queued && st.under_share(&tenant, self.slots) {
                st.start(&tenant);
                return self.turn_of(tenant);
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.entry(tenant.clone()).or_default().push_back(tx);
            if !queued {
                st.turns.push_back(tenant.clone());
            }
            // Calls of this tenant that gave up may be queued ahead with a
            // slot free: the queue moves now, not at the next release.
            self.fill(&mut st);
            rx
        };
        let mut wait = Waiting {
            gate: self.clone(),
            tenant,
            rx: Some(rx),
        };
        let rx = wait.rx.as_mut().expect("set above");
        // The sender is only dropped by the gate, which lives as long as we do.
        let _ = rx.await;
        wait.rx = None; // the slot is taken: dropping `wait` now frees nothing
        self.turn_of(std::mem::take(&mut wait.tenant))
    }

    fn turn_of(self: &Arc<Self>, tenant: String) -> Turn {
        Turn {
            gate: self.clone(),
            tenant,
        }
    }

    /// Frees a slot of `tenant`'s.
    fn release(&self, tenant: &str) {
        let mut st = self.lock();
        st.stop(tenant);
        st.prune(Instant::now());
        self.fill(&mut st);
    }

    /// Hands free slots to waiting calls, tenant by tenant in turn,
    /// skipping tenants at their share; stops when a whole round of
    /// turns finds no call that may run.
    fn fill(&self, st: &mut State) {
        let mut passed = 0;
        while st.running < self.slots && passed < st.turns.len() {
            let Some(tenant) = st.turns.pop_front() else {
                return;
            };
            if !st.under_share(&tenant, self.slots) {
                st.turns.push_back(tenant);
                passed += 1;
                continue;
            }
            let Some(queue) = st.waiting.get_mut(&tenant) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                st.waiting.remove(&tenant);
            } else {
                st.turns.push_back(tenant.clone());
            }
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                st.start(&tenant); // the slot passes to that call
                passed = 0;
            }
        }
    }
}

/// A running call's slot.
pub struct Turn {
    gate: Arc<FairGate>,
    tenant: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.gate.release(&self.tenant);
    }
}

/// A call waiting for its turn; dropped after being handed a slot but
/// before taking it (its deadline passed at that moment), it passes the
/// slot on.
struct Waiting {
    gate: Arc<FairGate>,
    tenant: String,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take()
            && rx.try_recv().is_ok()
        {
            self.gate.release(&self.tenant);
        }
    }
}

pub type FairGateLayer = AroundLayer<Arc<FairGate>>;

impl FairGateLayer {
    pub fn new(gate: Arc<FairGate>) -> FairGateLayer {
        AroundLayer(gate)
    }
}

impl Around for Arc<FairGate> {
    fn around<B, R, E, F>(
        &self,
        req: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> BoxFuture<Result<Response<R>, E>>
    where
        R: Default + Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<Response<R>, E>> + Send + 'static,
    {
        if !is_bounded(req.uri().path()) {
            return Box::pin(call(req));
        }
        let tenant = tenant_of(&req);
        let gate = self.clone();
        // tonic's handler futures start their work when polled, not here.
        let call = call(req);
        Box::pin(async move {
            let turn = gate.turn(tenant).await;
            let r = call.await;
            drop(turn);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_next_tenant_in_turn() {
        let gate = FairGate::new(1);
        let first = gate.turn("noisy").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Three of the noisy tenant queue first, then one quiet call.
        for tenant in ["noisy", "noisy", "noisy", "quiet"] {
            let (gate, tx) = (gate.clone(), tx.clone());
            tokio::spawn(async move {
                let turn = gate.turn(tenant).await;
                tx.send(tenant).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(turn);
            });
            tokio::task::yield_now().await;
        }
        drop(first);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, ["noisy", "quiet", "noisy", "noisy"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_runs_half_the_slots_while_another_is_active() {
        let gate = FairGate::new(4);
        let running = |gate: &Arc<FairGate>| gate.lock().running;
        // Alone, a tenant has every slot.
        let mut noisy = Vec::new();
        for _ in 0..4 {
            noisy.push(gate.turn("noisy").await);
        }
        noisy.truncate(1);
        // Another tenant calls: it runs at once, and from now on the noisy
        // one runs at most two calls, though a slot is free.
        let quiet = gate.turn("quiet").await;
        noisy.push(gate.turn("noisy").await);
        let third = tokio::spawn({
            let gate = gate.clone();
            async move { gate.turn("noisy").await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        assert_eq!(running(&gate), 3);
        // The quiet tenant leaves; still active for ACTIVE_FOR.
        drop(quiet);
        assert!(!third.is_finished());
        assert_eq!(running(&gate), 2);
        // Once it has been quiet that long, the next release hands the
        // noisy tenant every free slot.
        tokio::time::advance(ACTIVE_FOR).await;
        drop(noisy.pop());
        let third = tokio::time::timeout(Duration::from_secs(5), third).await;
        assert!(third.is_ok());
        let more = tokio::time::timeout(Duration::from_secs(5), gate.turn("noisy")).await;
        assert!(more.is_ok());
        assert_eq!(running(&gate), 3);
    }

    #[tokio::test]
    async fn two_busy_tenants_fill_every_slot() {
        let gate = FairGate::new(4);
        let mut turns = Vec::new();
        for tenant in ["a", "b", "a", "b"] {
            turns.push(gate.turn(tenant).await);
        }
        assert_eq!(gate.lock().running, 4);
        let fifth = tokio::time::timeout(Duration::from_millis(50), gate.turn("a")).await;
        assert!(fifth.is_err(), "every slot is taken");
    }

    #[tokio::test]
    async fn a_call_dropped_while_waiting_does_not_keep_a_slot() {
        let gate = FairGate::new(1);
        let first = gate.turn("a").await;
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.turn("a").await }
        });
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        drop(first);
        // The slot is free again: a new call runs at once.
        let again = tokio::time::timeout(Duration::from_secs(5), gate.turn("b")).await;
        assert!(again.is_ok());
        assert_eq!(gate.lock().running, 1);
    }
}
