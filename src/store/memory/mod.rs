//! The in-process store: the same contracts as Postgres, behind one lock,
//! so that the service runs with no database for demos and tries. A unit
//! of work holds the lock from `begin` to its end, which makes it both
//! isolated and serialised; `Locked` units keep their writes aside until
//! `commit`, as a transaction would. Nothing survives a restart.

mod events;
mod log;
mod outbox;
mod retention;

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    domain::{
        Cart, CartError, CartEvent, CartId, CartStatus, EventType, IdempotencyKey, TenantId,
        callback::CallbackDue, cart::Change,
    },
    feed::EventFeed,
    ports::{
        CartPage, CartRepository, Conflict, Inserted, Isolation, KeyRecord, ListQuery, Loaded,
        PageBuilder, Remembered, UnitOfWork, Write,
    },
};

struct StoredCart {
    cart: Cart,
    fingerprint: [u8; 32],
}

#[derive(Default)]
struct State {
    carts: HashMap<(TenantId, CartId), StoredCart>,
    references: HashMap<(TenantId, String), CartId>,
    keys: HashMap<(TenantId, String), Remembered>,
    events: events::Events,
    outbox: outbox::Outbox,
}

pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    feed: Arc<EventFeed>,
    /// The outbox's own wake-up, reachable without the lock.
    callbacks_written: Arc<tokio::sync::Notify>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let state = State::default();
        let callbacks_written = state.outbox.written();
        MemoryStore {
            state: Arc::new(Mutex::new(state)),
            feed: Arc::new(EventFeed::new()),
            callbacks_written,
        }
    }
}

/// A change kept aside by a `Locked` unit until it commits.
enum Pending {
    Insert {
        tenant: TenantId,
        cart: Box<Cart>,
        fingerprint: [u8; 32],
        key: Option<IdempotencyKey>,
    },
    Save {
        tenant: TenantId,
        cart: Box<Cart>,
        change: Change,
        at: DateTime<Utc>,
        callback: Option<CallbackDue>,
        key: Option<Box<(IdempotencyKey, Cart)>>,
    },
}

impl State {
    fn key_taken(&self, tenant: &TenantId, key: Option<&IdempotencyKey>) -> bool {
        key.is_some_and(|k| self.keys.contains_key(&(tenant.clone(), k.key.clone())))
    }

    fn remember(
        &mut self,
        tenant: &TenantId,
        key: IdempotencyKey,
        response: Cart,
        at: DateTime<Utc>,
    ) {
        let remembered = Remembered {
            fingerprint: key.fingerprint.to_vec(),
            response,
            recorded_at: at,
        };
        self.keys.insert((tenant.clone(), key.key), remembered);
    }

    /// Appends an event and publishes it (under the lock, so in sequence order).
    fn record(
        &mut self,
        feed: &EventFeed,
        tenant: &TenantId,
        cart: &Cart,
        change: Change,
        at: DateTime<Utc>,
    ) {
        let previous = (change.event != EventType::Created).then_some(change.previous_status);
        let event = self.events.append(|sequence| CartEvent {
            sequence,
            tenant: tenant.clone(),
            event_type: change.event,
            previous_status: previous,
            occurred_at: at,
            cart: cart.clone(),
        });
        feed.advance(event.sequence);
        feed.publish(event);
    }

    fn apply(&mut self, feed: &EventFeed, op: Pending) {
        match op {
            Pending::Insert {
                tenant,
                cart,
                fingerprint,
                key,
            } => {
                let created = Change {
                    event: EventType::Created,
                    previous_status: CartStatus::Active,
                };
                self.record(feed, &tenant, &cart, created, cart.created_at);
                if let Some(key) = key {
                    self.remember(&tenant, key, (*cart).clone(), cart.created_at);
                }
                if !cart.reference.is_empty() {
                    self.references
                        .insert((tenant.clone(), cart.reference.clone()), cart.id);
                }
                let stored = StoredCart {
                    cart: *cart,
                    fingerprint,
                };
                self.carts.insert((tenant, stored.cart.id), stored);
            }
            Pending::Save {
                tenant,
                cart,
                change,
                at,
                callback,
                key,
            } => {
                self.record(feed, &tenant, &cart, change, at);
                if let Some(due) = callback {
                    self.outbox.push(&tenant, &cart, due, at);
                }
                if let Some((key, response)) = key.map(|k| *k) {
                    self.remember(&tenant, key, response, at);
                }
                if let Some(s) = self.carts.get_mut(&(tenant, cart.id)) {
                    s.cart = *cart;
                }
            }
        }
    }
}

struct MemoryUnit {
    state: OwnedMutexGuard<State>,
    feed: Arc<EventFeed>,
    isolation: Isolation,
    pending: Vec<Pending>,
}

impl MemoryUnit {
    fn stage(&mut self, op: Pending) {
        match self.isolation {
            Isolation::Optimistic | Isolation::Remembered => self.state.apply(&self.feed, op),
            Isolation::Locked => self.pending.push(op),
        }
    }
}

#[async_trait]
impl UnitOfWork for MemoryUnit {
    async fn load(
        &mut self,
        tenant: &TenantId,
        ids: &[CartId],
        key: Option<&str>,
    ) -> Result<Loaded, Conflict> {
        let carts = ids
            .iter()
            .filter_map(|id| self.state.carts.get(&(tenant.clone(), *id)))
            .map(|s| s.cart.clone())
            .collect();
        let remembered = key.and_then(|k| {
            self.state
                .keys
                .get(&(tenant.clone(), k.to_string()))
                .cloned()
        });
        Ok(Loaded {
            carts,
            remembered,
            unconfirmed: false,
        })
    }

    async fn load_expired(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, Cart)>, Conflict> {
        Ok(self
            .state
            .carts
            .iter()
            .filter(|(_, s)| s.cart.expires_at.is_some_and(|at| at <= now))
            .take(limit)
            .map(|((tenant, _), s)| (tenant.clone(), s.cart.clone()))
            .collect())
    }

    async fn insert(
        &mut self,
        tenant: &TenantId,
        cart: &Cart,
        fingerprint: [u8; 32],
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, Conflict> {
        if !cart.reference.is_empty()
            && let Some(id) = self
                .state
                .references
                .get(&(tenant.clone(), cart.reference.clone()))
        {
            let existing = &self.state.carts[&(tenant.clone(), *id)];
            return Ok(Inserted::ReferenceTaken {
                cart: Box::new(existing.cart.clone()),
                fingerprint: existing.fingerprint.to_vec(),
            });
        }
        if self.state.key_taken(tenant, key) {
            return Err(Conflict::KeyTaken);
        }
        self.stage(Pending::Insert {
            tenant: tenant.clone(),
            cart: Box::new(cart.clone()),
            fingerprint,
            key: key.cloned(),
        });
        Ok(Inserted::Created)
    }

    async fn save(
        &mut self,
        tenant: &TenantId,
        write: &Write<'_>,
        key: Option<KeyRecord<'_>>,
    ) -> Result<(), Conflict> {
        let stored = self
            .state
            .carts
            .get(&(tenant.clone(), write.cart.id))
            .ok_or(CartError::CartNotFound)?;
        if stored.cart.version != write.cart.version - 1 {
            return Err(Conflict::Raced);
        }
        if self.state.key_taken(tenant, key.map(|k| k.key)) {
            return Err(Conflict::KeyTaken);
        }
        self.stage(Pending::Save {
            tenant: tenant.clone(),
            cart: Box::new(write.cart.clone()),
            change: write.change,
            at: write.at,
            callback: write.callback.clone(),
            key: key.map(|k| Box::new((k.key.clone(), k.response.clone()))),
        });
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Conflict> {
        for op in std::mem::take(&mut self.pending) {
            self.state.apply(&self.feed, op);
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) {}
}

#[async_trait]
impl CartRepository for MemoryStore {
    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError> {
        let st = self.state.lock().await;
        st.carts
            .get(&(tenant.clone(), id))
            .map(|s| s.cart.clone())
            .ok_or(CartError::CartNotFound)
    }

    async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<CartPage, CartError> {
        let st = self.state.lock().await;
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
        carts.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
        let mut page = PageBuilder::new(q.page_size);
        carts.into_iter().take_while(|c| page.offer(c)).count();
        Ok(page.finish())
    }

    async fn begin(&self, isolation: Isolation) -> Result<Box<dyn UnitOfWork>, CartError> {
        Ok(Box::new(MemoryUnit {
            state: self.state.clone().lock_owned().await,
            feed: self.feed.clone(),
            isolation,
            pending: Vec::new(),
        }))
    }

    async fn forget_key(
        &self,
        tenant: &TenantId,
        key: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<(), CartError> {
        let mut st = self.state.lock().await;
        let k = (tenant.clone(), key.to_string());
        if st.keys.get(&k).is_some_and(|r| r.recorded_at <= cutoff) {
            st.keys.remove(&k);
        }
        Ok(())
    }

    async fn forget_keys_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError> {
        let mut st = self.state.lock().await;
        let old: Vec<_> = st
            .keys
            .iter()
            .filter(|(_, r)| r.recorded_at <= cutoff)
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for k in &old {
            st.keys.remove(k);
        }
        Ok(old.len())
    }

    async fn check_health(&self) -> Result<(), CartError> {
        Ok(())
    }
}
