//! The in-memory callback outbox: rows pushed with the change that calls
//! for them (under the store's lock), claimed within the worker's limits.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{Cart, CartId, TenantId, callback::CallbackDue},
    ports::{Backlog, Claim, Delivery, DeliveryState, Outcome, endpoint_of},
};

struct Row {
    tenant: TenantId,
    cart: CartId,
    endpoint: String,
    body: String,
    lease_until: Option<DateTime<Utc>>,
    state: DeliveryState,
}

#[derive(Default)]
pub(super) struct Outbox {
    /// Oldest first.
    rows: Vec<Row>,
    /// Poked when a row is pushed.
    written: Arc<Notify>,
}

impl Outbox {
    pub fn written(&self) -> Arc<Notify> {
        self.written.clone()
    }

    /// Adds the delivery a change called for.
    pub fn push(&mut self, tenant: &TenantId, cart: &Cart, due: CallbackDue, now: DateTime<Utc>) {
        let body = serde_json::to_string(&due.payload).unwrap_or_default();
        self.rows.push(Row {
            tenant: tenant.clone(),
            cart: cart.id,
            endpoint: endpoint_of(&due.url),
            body,
            lease_until: None,
            state: DeliveryState {
                id: Uuid::new_v4(),
                version: cart.version,
                url: due.url,
                state: "pending".into(),
                attempts: 0,
                last_status: None,
                last_error: None,
                next_attempt_at: now,
                delivered_at: None,
            },
        });
        // The claim takes the store's lock, so it sees this row.
        self.written.notify_one();
    }

    fn due(&self, now: DateTime<Utc>) -> impl Iterator<Item = (usize, &Row)> {
        self.rows.iter().enumerate().filter(move |(_, r)| {
            r.state.state == "pending"
                && r.state.next_attempt_at <= now
                && r.lease_until.is_none_or(|l| l <= now)
        })
    }

    pub fn claim(&mut self, claim: &Claim, now: DateTime<Utc>) -> Vec<Delivery> {
        let mut due: Vec<(usize, &Row)> = self.due(now).collect();
        due.sort_by_key(|(i, r)| (r.state.next_attempt_at, *i));
        let mut per_endpoint: HashMap<&str, u32> = HashMap::new();
        let mut per_tenant: HashMap<&str, u32> = HashMap::new();
        let mut picked = Vec::new();
        for (i, r) in due {
            if picked.len() == claim.limit {
                break;
            }
            let e = per_endpoint.entry(r.endpoint.as_str()).or_default();
            let t = per_tenant.entry(r.tenant.as_str()).or_default();
            if *e < claim.endpoints.of(&r.endpoint) && *t < claim.tenants.of(r.tenant.as_str()) {
                *e += 1;
                *t += 1;
                picked.push(i);
            }
        }
        picked
            .into_iter()
            .map(|i| {
                let r = &mut self.rows[i];
                r.state.attempts += 1;
                r.lease_until = Some(claim.lease_until);
                Delivery {
                    id: r.state.id,
                    tenant: r.tenant.clone(),
                    url: r.state.url.clone(),
                    endpoint: r.endpoint.clone(),
                    body: r.body.clone(),
                    attempts: r.state.attempts,
                }
            })
            .collect()
    }

    pub fn record(&mut self, id: Uuid, outcome: &Outcome, now: DateTime<Utc>) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.state.id == id) {
            let row = outcome.row(now);
            r.state.state = row.state.to_string();
            if let Some(next) = row.next_attempt_at {
                r.state.next_attempt_at = next;
            }
            r.state.last_status = row.last_status;
            r.state.last_error = row.last_error.map(str::to_string);
            r.state.delivered_at = row.delivered_at;
            r.lease_until = None;
        }
    }

    pub fn of(&self, tenant: &TenantId, cart: CartId) -> Vec<DeliveryState> {
        self.rows
            .iter()
            .filter(|r| &r.tenant == tenant && r.cart == cart)
            .map(|r| r.state.clone())
            .collect()
    }

    /// Deletes every delivery of a cart (the cart is being deleted).
    pub fn remove_cart(&mut self, tenant: &TenantId, cart: CartId) {
        self.rows
            .retain(|r| !(&r.tenant == tenant && r.cart == cart));
    }

    /// Deletes up to `limit` deliveries that finished at or before
    /// `before`; answers how many. Rows being attempted are pending, so
    /// they are never among them.
    pub fn purge(&mut self, before: DateTime<Utc>, limit: usize) -> usize {
        let mut deleted = 0;
        self.rows.retain(|r| {
            let done = deleted < limit && finished_at(&r.state).is_some_and(|at| at <= before);
            deleted += usize::from(done);
            !done
        });
        deleted
    }

    pub fn backlog(&self, now: DateTime<Utc>) -> Backlog {
        let pending = self.rows.iter().filter(|r| r.state.state == "pending");
        let (mut b, mut oldest) = (Backlog::default(), None::<DateTime<Utc>>);
        for r in pending {
            b.pending += 1;
            if r.state.next_attempt_at <= now {
                b.due += 1;
                oldest = Some(
                    oldest.map_or(r.state.next_attempt_at, |o| o.min(r.state.next_attempt_at)),
                );
            }
        }
        b.oldest_due = oldest;
        b
    }
}

/// When a delivery finished: its delivery, or for one given up the due
/// time of its last attempt (no later column records the failure; the
/// attempt ended within a claim and a timeout of it). None while pending.
/// As the Postgres index `callback_deliveries_finished_idx`.
fn finished_at(d: &DeliveryState) -> Option<DateTime<Utc>> {
    (d.state != "pending").then(|| d.delivered_at.unwrap_or(d.next_attempt_at))
}
