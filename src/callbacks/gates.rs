//! Concurrency caps of one worker: in all, per endpoint and per tenant, so
//! a slow or hanging receiver occupies only its own share. They shape the
//! claim itself: a worker never claims a callback it cannot start at once.

use std::{collections::HashMap, time::Instant};

use chrono::{DateTime, Utc};

use super::breaker::Breakers;
use crate::ports::{Budget, Claim, Delivery};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// POSTs under way at once on this replica.
    pub total: usize,
    /// Of those, to one endpoint (host:port).
    pub per_endpoint: u32,
    /// Of those, for one tenant.
    pub per_tenant: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            total: 256,
            per_endpoint: 64,
            per_tenant: 128,
        }
    }
}

/// What is under way; keys with nothing under way are dropped.
pub struct Gates {
    caps: Caps,
    in_flight: usize,
    endpoints: HashMap<String, u32>,
    tenants: HashMap<String, u32>,
}

impl Gates {
    pub fn new(caps: Caps) -> Gates {
        Gates {
            caps,
            in_flight: 0,
            endpoints: HashMap::new(),
            tenants: HashMap::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn free(&self) -> usize {
        self.caps.total.saturating_sub(self.in_flight)
    }

    /// A claim of as many callbacks as can start now.
    pub fn claim(&self, breakers: &Breakers, lease_until: DateTime<Utc>, now: Instant) -> Claim {
        let mut endpoints: HashMap<&str, u32> = self
            .endpoints
            .iter()
            .map(|(e, n)| (e.as_str(), self.caps.per_endpoint.saturating_sub(*n)))
            .collect();
        for (e, budget) in breakers.limits(now) {
            let left = endpoints.entry(e).or_insert(self.caps.per_endpoint);
            *left = (*left).min(budget);
        }
        let tenants = self
            .tenants
            .iter()
            .map(|(t, n)| (t.clone(), self.caps.per_tenant.saturating_sub(*n)))
            .collect();
        Claim {
            limit: self.free(),
            lease_until,
            endpoints: Budget {
                default: self.caps.per_endpoint,
                except: endpoints
                    .into_iter()
                    .map(|(e, n)| (e.to_string(), n))
                    .collect(),
            },
            tenants: Budget {
                default: self.caps.per_tenant,
                except: tenants,
            },
        }
    }

    pub fn start(&mut self, d: &Delivery) {
        self.in_flight += 1;
        *self.endpoints.entry(d.endpoint.clone()).or_default() += 1;
        *self
            .tenants
            .entry(d.tenant.as_str().to_string())
            .or_default() += 1;
    }

    /// Whether `d`'s endpoint or tenant is at its cap.
    pub fn at_cap(&self, d: &Delivery) -> bool {
        self.endpoints.get(&d.endpoint) >= Some(&self.caps.per_endpoint)
            || self.tenants.get(d.tenant.as_str()) >= Some(&self.caps.per_tenant)
    }

    /// One ended; answers whether a cap it counted against was reached
    /// (so rows may be waiting that the last claim had to leave).
    pub fn finish(&mut self, endpoint: &str, tenant: &str) -> bool {
        let full = self.in_flight >= self.caps.total
            || self.endpoints.get(endpoint) >= Some(&self.caps.per_endpoint)
            || self.tenants.get(tenant) >= Some(&self.caps.per_tenant);
        self.in_flight = self.in_flight.saturating_sub(1);
        release(&mut self.endpoints, endpoint);
        release(&mut self.tenants, tenant);
        full
    }
}

fn release(map: &mut HashMap<String, u32>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{callbacks::breaker::BreakerSettings, domain::TenantId};

    fn delivery(endpoint: &str, tenant: &str) -> Delivery {
        Delivery {
            id: uuid::Uuid::new_v4(),
            tenant: TenantId(tenant.into()),
            url: format!("http://{endpoint}/"),
            endpoint: endpoint.into(),
            body: "{}".into(),
            attempts: 1,
        }
    }

    #[test]
    fn a_claim_asks_for_what_can_start_now() {
        let caps = Caps {
            total: 4,
            per_endpoint: 2,
            per_tenant: 3,
        };
        let mut g = Gates::new(caps);
        let breakers = Breakers::new(BreakerSettings::default());
        g.start(&delivery("a:1", "t"));
        g.start(&delivery("a:1", "t"));
        g.start(&delivery("b:1", "t"));
        let c = g.claim(&breakers, Utc::now(), Instant::now());
        assert_eq!(c.limit, 1);
        assert_eq!(
            (
                c.endpoints.of("a:1"),
                c.endpoints.of("b:1"),
                c.endpoints.of("c:1")
            ),
            (0, 1, 2)
        );
        assert_eq!((c.tenants.of("t"), c.tenants.of("u")), (0, 3));
        assert!(g.finish("a:1", "t"), "a:1 and t were at their caps");
        assert!(!g.finish("b:1", "t"));
        assert_eq!(g.in_flight(), 1);
        let c = g.claim(&breakers, Utc::now(), Instant::now());
        assert_eq!(
            (c.limit, c.endpoints.of("a:1"), c.endpoints.except.len()),
            (3, 1, 1)
        );
    }

    #[test]
    fn an_open_circuit_closes_its_endpoint_in_the_claim() {
        let mut breakers = Breakers::new(BreakerSettings::default());
        let now = Instant::now();
        for _ in 0..5 {
            breakers.finished("down:1", super::super::breaker::Health::Down, now);
        }
        let c = Gates::new(Caps::default()).claim(&breakers, Utc::now(), now);
        assert_eq!(c.endpoints.of("down:1"), 0);
        assert_eq!(c.endpoints.closed(), ["down:1"]);
    }
}
