//! The memory store's event log: events by sequence and by cart, with the
//! compaction point, so that retention can delete events (see
//! `crate::ports::events` and `crate::ports::retention`). Every method runs
//! under the store's lock, so a read and its compaction check see one state.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};

use crate::{
    domain::{CartError, CartEvent, CartId, TenantId},
    ports::{
        events::{check_sequence, check_version},
        retention::EVENTS_EXAMINED_PER_ROW,
    },
};

#[derive(Default)]
pub(super) struct Events {
    by_sequence: BTreeMap<i64, Arc<CartEvent>>,
    /// Each cart's events held: version -> sequence.
    by_cart: HashMap<(TenantId, CartId), BTreeMap<i64, i64>>,
    /// The last sequence handed out; sequences are never reused.
    last_sequence: i64,
    /// Every event at or below it is deleted, except carts' current events.
    compacted_through: i64,
}

/// One event a purge passes, as judged before it deletes anything (as the
/// Postgres statement judges its snapshot).
struct Passed {
    sequence: i64,
    cart: (TenantId, CartId),
    /// Not its cart's current event: deleted.
    stale: bool,
    /// Its cart still has an event at or below the compaction point (kept
    /// as current then, superseded since): deleted with it.
    orphaned: bool,
}

impl Events {
    /// Appends the event `make` builds for the next sequence.
    pub fn append(&mut self, make: impl FnOnce(i64) -> CartEvent) -> Arc<CartEvent> {
        self.last_sequence += 1;
        let event = Arc::new(make(self.last_sequence));
        self.by_cart
            .entry((event.tenant.clone(), event.cart.id))
            .or_default()
            .insert(event.version(), event.sequence);
        self.by_sequence.insert(event.sequence, event.clone());
        event
    }

    /// The tenant's events after `after`, or `EventsCompacted` when `after`
    /// is below the compaction point.
    pub fn of_tenant(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        check_sequence(after, self.compacted_through)?;
        Ok(self
            .by_sequence
            .range(after.saturating_add(1)..)
            .map(|(_, e)| e)
            .filter(|e| &e.tenant == tenant)
            .take(limit)
            .map(|e| CartEvent::clone(e))
            .collect())
    }

    /// The cart's events after `after_version`, or `EventsCompacted` when
    /// the version after it is no longer held.
    pub fn of_cart(
        &self,
        tenant: &TenantId,
        cart: CartId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<CartEvent>, CartError> {
        let Some(held) = self.by_cart.get(&(tenant.clone(), cart)) else {
            return Ok(Vec::new());
        };
        if let Some((&oldest, _)) = held.first_key_value() {
            check_version(after_version, oldest)?;
        }
        Ok(held
            .range(after_version.saturating_add(1)..)
            .take(limit)
            .map(|(_, seq)| CartEvent::clone(&self.by_sequence[seq]))
            .collect())
    }

    /// The event of one version of a cart, if held.
    pub fn version(&self, tenant: &TenantId, cart: CartId, version: i64) -> Option<CartEvent> {
        let seq = self.by_cart.get(&(tenant.clone(), cart))?.get(&version)?;
        Some(CartEvent::clone(&self.by_sequence[seq]))
    }

    /// Deletes every event of a cart (the cart is being deleted).
    pub fn remove_cart(&mut self, tenant: &TenantId, cart: CartId) {
        for seq in self
            .by_cart
            .remove(&(tenant.clone(), cart))
            .unwrap_or_default()
            .into_values()
        {
            self.by_sequence.remove(&seq);
        }
    }

    /// The retention port's `purge_events`: passes events in sequence order
    /// from the compaction point, stopping before the first that occurred
    /// after `before` or that would take the deletions past `limit`;
    /// `current` answers a cart's current version. Answers how many it
    /// deleted. The same rule as the Postgres statement `PURGE_EVENTS`.
    pub fn purge(
        &mut self,
        before: DateTime<Utc>,
        limit: usize,
        current: impl Fn(&TenantId, CartId) -> Option<i64>,
    ) -> usize {
        let through = self.compacted_through;
        let mut passed = Vec::new();
        let mut spent = 0;
        let examined = self
            .by_sequence
            .range(through.saturating_add(1)..)
            .take(limit.saturating_mul(EVENTS_EXAMINED_PER_ROW));
        for (&sequence, e) in examined {
            if e.occurred_at > before {
                break;
            }
            let cart = (e.tenant.clone(), e.cart.id);
            let stale = current(&e.tenant, e.cart.id) != Some(e.version());
            let orphaned = self.by_cart[&cart]
                .first_key_value()
                .is_some_and(|(_, &seq)| seq <= through);
            spent += usize::from(stale) + usize::from(orphaned);
            if spent > limit {
                break;
            }
            passed.push(Passed {
                sequence,
                cart,
                stale,
                orphaned,
            });
        }
        let Some(last) = passed.last().map(|p| p.sequence) else {
            return 0;
        };
        let mut deleted = 0;
        for p in passed {
            let Some(held) = self.by_cart.get_mut(&p.cart) else {
                continue;
            };
            if p.orphaned {
                let old: Vec<(i64, i64)> = held
                    .iter()
                    .filter(|(_, seq)| **seq <= through)
                    .map(|(v, s)| (*v, *s))
                    .collect();
                for (version, seq) in old {
                    held.remove(&version);
                    self.by_sequence.remove(&seq);
                    deleted += 1;
                }
            }
            if p.stale
                && let Some(e) = self.by_sequence.remove(&p.sequence)
            {
                held.remove(&e.version());
                deleted += 1;
            }
            if held.is_empty() {
                self.by_cart.remove(&p.cart);
            }
        }
        self.compacted_through = last;
        deleted
    }
}
