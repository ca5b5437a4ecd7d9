//! The in-process store: the same contract as Postgres, behind one mutex, so
//! that the service runs with no database for demos and tries. Nothing
//! survives a restart.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    CartPage, CartStore, IDEMPOTENCY_WINDOW, ListQuery, MergeRequest, PageCursor, now, replay,
};
use crate::domain::{
    Cart, CartError, CartId, CartStatus, Command, EventType, IdempotencyKey, NewCart, Policy,
    TenantId, cart::Change, merge,
};

/// One entry of the event log, as Postgres keeps it in `cart_events`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub sequence: i64,
    pub tenant: TenantId,
    pub event: EventType,
    pub previous_status: Option<CartStatus>,
    pub occurred_at: DateTime<Utc>,
    pub cart: Cart,
}

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
    events: Vec<EventRecord>,
}

pub struct MemoryStore {
    policy: Policy,
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new(policy: Policy) -> Self {
        MemoryStore {
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change
        // (changes are built on copies), so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events recorded so far, oldest first.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.clone()
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

    fn record(&mut self, tenant: &TenantId, cart: &Cart, change: Change, now: DateTime<Utc>) {
        let previous = (change.event != EventType::Created).then_some(change.previous_status);
        self.events.push(EventRecord {
            sequence: self.events.len() as i64 + 1,
            tenant: tenant.clone(),
            event: change.event,
            previous_status: previous,
            occurred_at: now,
            cart: cart.clone(),
        });
    }

    fn save(&mut self, tenant: &TenantId, cart: Cart, change: Change, now: DateTime<Utc>) {
        self.record(tenant, &cart, change, now);
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
        st.record(tenant, &cart, created, now);
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
        let more = carts.len() > q.page_size;
        carts.truncate(q.page_size);
        let next = more
            .then(|| {
                carts.last().map(|c| PageCursor {
                    created_at: c.created_at,
                    id: c.id,
                })
            })
            .flatten();
        Ok(CartPage {
            carts: carts.into_iter().cloned().collect(),
            next,
        })
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
        st.save(tenant, cart.clone(), change, now);
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
        let response = match (&target, out.returns_target) {
            (Some(t), true) => t.clone(),
            _ => source.clone(),
        };
        st.remember(tenant, idem, &response, now);
        st.save(tenant, source, out.source, now);
        if let (Some(t), Some(change)) = (target, out.target) {
            st.save(tenant, t, change, now);
        }
        Ok(response)
    }

    async fn check_health(&self) -> Result<(), CartError> {
        Ok(())
    }
}
