//! Calls per tenant, as admission (calls in flight) and the fair gate
//! (calls running) count them: a tenant with none is not listed, so the
//! map follows the tenants active now.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct TenantCounts(HashMap<String, usize>);

impl TenantCounts {
    /// The calls `tenant` has now.
    pub fn of(&self, tenant: &str) -> usize {
        self.0.get(tenant).copied().unwrap_or(0)
    }

    /// Tenants with at least one call.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The most calls any tenant other than `tenant` has.
    pub fn most_except(&self, tenant: &str) -> usize {
        self.0
            .iter()
            .filter(|(t, _)| t.as_str() != tenant)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// One call more of `tenant` (its name is copied only when it is new).
    pub fn add(&mut self, tenant: &str) {
        match self.0.get_mut(tenant) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(tenant.to_string(), 1);
            }
        }
    }

    /// One call less of `tenant`.
    pub fn remove(&mut self, tenant: &str) {
        if let Some(n) = self.0.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TenantCounts;

    #[test]
    fn a_tenant_is_listed_while_it_has_calls() {
        let mut c = TenantCounts::default();
        c.add("a");
        c.add("a");
        c.add("b");
        assert_eq!((c.of("a"), c.of("b"), c.len()), (2, 1, 2));
        assert_eq!(c.most_except("b"), 2);
        assert_eq!(c.most_except("a"), 1);
        c.remove("b");
        assert_eq!((c.of("b"), c.len(), c.most_except("a")), (0, 1, 0));
        c.remove("b");
        assert_eq!(c.len(), 1, "removing a call of nobody changes nothing");
    }
}
