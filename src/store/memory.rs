//! The in-process store: the same contract as Postgres, behind one mutex, so
//! that the service runs with no database for demos and tries. Nothing
//! survives a restart.

mod outbox;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    Backlog, CartPage, CartStore, Claim, Delivery, DeliveryState, IDEMPOTENCY_WINDOW, ListQuery,
    MergeRequest, Outcome, now, replay,
};
use crate::{
    domain::{
        Cart, CartError, CartEvent, CartId, CartStatus, Command, EventType, IdempotencyKey,
        NewCart, Policy, TenantId, cart::Change, merge,
    },
    watch::EventFeed,
};

struct StoredCart {
    cart: Cart,
    fingerprint: [u8; 32],
}

struct Remembered {
    fingerprint: [u8; 32],
    response: Cart,
    at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    carts: HashMap<(TenantId, CartId), StoredCart>,
    references: HashMap<(TenantId, String), CartId>,
    keys: HashMap<(TenantId, String), Remembered>,
    /// The event log; an event's sequence is its index + 1.
    events: Vec<Arc<CartEvent>>,
    /// The callback outbox.
    callbacks: outbox::Outbox,
}

pub struct MemoryStore {
    policy: Policy,
    state: Mutex<State>,
    feed: EventFeed,
}

impl MemoryStore {
    pub fn new(policy: Policy) -> Self {
        MemoryStore {
            policy,
            state: Mutex::new(State::default()),
            feed: EventFeed::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change
        // (changes are built on copies), so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn remembered(
        &self,
        tenant: &TenantId,
        idem: Option<&IdempotencyKey>,
        now: DateTime<Utc>,
    ) -> Option<Result<Cart, CartError>> {
        let key = idem?;
        let r = self.keys.get(&(tenant.clone(), key.key.clone()))?;
        (now - r.at < IDEMPOTENCY_WINDOW).then(|| replay(&r.fingerprint, r.response.clone(), key))
    }

    fn remember(
        &mut self,
        tenant: &TenantId,
        idem: Option<&IdempotencyKey>,
        response: &Cart,
        now: DateTime<Utc>,
    ) {
        if let Some(key) = idem {
            let r = Remembered {
                fingerprint: key.fingerprint,
                response: response.clone(),
                at: now,
            };
            self.keys.insert((tenant.clone(), key.key.clone()), r);
        }
    }

    fn cart(&self, tenant: &TenantId, id: CartId) -> Result<&Cart, CartError> {
        self.carts
            .get(&(tenant.clone(), id))
            .map(|s| &s.cart)
            .ok_or(CartError::CartNotFound)
    }

    /// Appends the event of a change and publishes it (still under the
    /// lock, so events are published in sequence order).
    fn record(
        &mut self,
        feed: &EventFeed,
        tenant: &TenantId,
        cart: &Cart,
        change: Change,
        now: DateTime<Utc>,
    ) {
        let previous = (change.event != EventType::Created).then_some(change.previous_status);
        let event = Arc::new(CartEvent {
            sequence: self.events.len() as i64 + 1,
            tenant: tenant.clone(),
            event_type: change.event,
            previous_status: previous,
            occurred_at: now,
            cart: cart.clone(),
        });
        self.events.push(event.clone());
        feed.advance(event.sequence);
        feed.publish(event);
    }

    fn save(
        &mut self,
        feed: &EventFeed,
        tenant: &TenantId,
        cart: Cart,
        change: Change,
        now: DateTime<Utc>,
    ) {
        self.record(feed, tenant, &cart, change, now);
        self.callbacks.push(tenant, &cart, change, now);
        if let Some(s) = self.carts.get_mut(&(tenant.clone(), cart.id)) {
            s.cart = cart;
        }
    }
}

#[async_trait]
impl CartStore for MemoryStore {
    async fn create(
        &self,
        tenant: &TenantId,
        new: NewCart,
        fingerprint: [u8; 32],
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let now = now();
        let mut st = self.lock();
        if let Some(r) = st.remembered(tenant, idem, now) {
            return r;
        }
        let reference = new.reference.clone();
        if !reference.is_empty()
            && let Some(id) = st.references.get(&(tenant.clone(), reference.clone()))
        {
            let existing = &st.carts[&(tenant.clone(), *id)];
            return if existing.fingerprint == fingerprint {
                Ok(existing.cart.clone())
            } else {
                Err(CartError::ReferenceTaken(reference))
            };
        }
        let cart = Cart::create(Uuid::new_v4(), new, now, &self.policy)?;
        let created = Change {
            event: EventType::Created,
            previous_status: CartStatus::Active,
        };
        st.record(&self.feed, tenant, &cart, created, now);
        st.remember(tenant, idem, &cart, now);
        if !reference.is_empty() {
            st.references.insert((tenant.clone(), reference), cart.id);
        }
        let stored = StoredCart {
            cart: cart.clone(),
            fingerprint,
        };
        st.carts.insert((tenant.clone(), cart.id), stored);
        Ok(cart)
    }

    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        self.lock().cart(tenant, id).cloned()
    }

    async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<CartPage, CartError> {
        let st = self.lock();
        let key = |c: &Cart| std::cmp::Reverse((c.created_at, c.id));
        let mut carts: Vec<&Cart> = st
            .carts
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, s)| &s.cart)
            .filter(|c| q.customer_id.is_empty() || c.customer_id == q.customer_id)
            .filter(|c| q.statuses.is_empty() || q.statuses.contains(&c.status))
            .filter(|c| {
                q.after
                    .is_none_or(|a| (c.created_at, c.id) < (a.created_at, a.id))
            })
            .collect();
        carts.sort_by_key(|c| key(c));
        carts.truncate(q.page_size + 1);
        let carts = carts.into_iter().cloned().collect();
        Ok(CartPage::from_overfetch(carts, q.page_size))
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        id: CartId,
        cmd: &Command,
        expected_version: i64,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let now = now();
        let mut st = self.lock();
        if let Some(r) = st.remembered(tenant, idem, now) {
            return r;
        }
        let mut cart = st.cart(tenant, id)?.clone();
        let change = cart.apply(cmd, expected_version, now, &self.policy)?;
        st.remember(tenant, idem, &cart, now);
        st.save(&self.feed, tenant, cart.clone(), change, now);
        Ok(cart)
    }

    async fn merge(
        &self,
        tenant: &TenantId,
        req: &MergeRequest,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Cart, CartError> {
        let now = now();
        let mut st = self.lock();
        if let Some(r) = st.remembered(tenant, idem, now) {
            return r;
        }
        let mut source = st.cart(tenant, req.source)?.clone();
        let mut target = req
            .target
            .map(|t| st.cart(tenant, t).cloned())
            .transpose()?;
        let out = merge(
            &mut source,
            target.as_mut(),
            &req.customer_id,
            req.strategy,
            req.expected_version,
            now,
            &self.policy,
        )?;
        let response = out.answer(&source, target.as_ref()).clone();
        st.remember(tenant, idem, &response, now);
        st.save(&self.feed, tenant, source, out.source, now);
        if let (Some(t), Some(change)) = (target, out.target) {
            st.save(&self.feed, tenant, t, change, now);
        }
        Ok(response)
    }

    async fn check_health(&self) -> Result<(), CartError> {
        Ok(())
    }

    async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let st = self.lock();
        let from = usize::try_from(after).unwrap_or(0).min(st.events.len());
        Ok(st.events[from..]
            .iter()
            .filter(|e| &e.tenant == tenant)
            .take(limit)
            .map(|e| CartEvent::clone(e))
            .collect())
    }

    async fn cart_events(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let st = self.lock();
        Ok(st
            .events
            .iter()
            .filter(|e| &e.tenant == tenant && e.cart.id == cart && e.version() > after_version)
            .take(limit)
            .map(|e| CartEvent::clone(e))
            .collect())
    }

    async fn current_event(&self, tenant: &TenantId, cart: CartId) -> Result<CartEvent, CartError> {
        let st = self.lock();
        let version = st.cart(tenant, cart)?.version;
        st.events
            .iter()
            .rev()
            .find(|e| &e.tenant == tenant && e.cart.id == cart && e.version() == version)
            .map(|e| CartEvent::clone(e))
            .ok_or_else(|| CartError::Internal("a cart without its event".into()))
    }

    async fn forget_old_keys(&self, limit: usize) -> Result<usize, CartError> {
        let cutoff = now() - IDEMPOTENCY_WINDOW;
        let mut st = self.lock();
        let old: Vec<_> = st
            .keys
            .iter()
            .filter(|(_, r)| r.at <= cutoff)
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for k in &old {
            st.keys.remove(k);
        }
        Ok(old.len())
    }

    async fn expire_due(&self, limit: usize) -> Result<usize, CartError> {
        let now = now();
        let mut st = self.lock();
        let due: Vec<(TenantId, CartId)> = st
            .carts
            .iter()
            .filter(|(_, s)| s.cart.expires_at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        let mut expired = 0;
        for (tenant, id) in due {
            let mut cart = st.cart(&tenant, id)?.clone();
            if let Ok(change) = cart.apply(&Command::Expire, 0, now, &self.policy) {
                st.save(&self.feed, &tenant, cart, change, now);
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }

    async fn claim_callbacks(&self, claim: &Claim) -> Result<Vec<Delivery>, CartError> {
        Ok(self.lock().callbacks.claim(claim, now()))
    }

    async fn record_callbacks(&self, outcomes: &[(Uuid, Outcome)]) -> Result<(), CartError> {
        let (mut st, now) = (self.lock(), now());
        for (id, outcome) in outcomes {
            st.callbacks.record(*id, outcome, now);
        }
        Ok(())
    }

    async fn callbacks_of(
        &self,
        tenant: &TenantId,
        cart: CartId,
    ) -> Result<Vec<DeliveryState>, CartError> {
        Ok(self.lock().callbacks.of(tenant, cart))
    }

    async fn callback_backlog(&self) -> Result<Backlog, CartError> {
        Ok(self.lock().callbacks.backlog(now()))
    }

    fn callbacks_written(&self) -> Arc<Notify> {
        self.lock().callbacks.written()
    }

    async fn head_now(&self) -> Result<i64, CartError> {
        Ok(self.feed.head())
    }
}
