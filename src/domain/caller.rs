//! Who is calling: the tenant of the caller's key and the scopes it holds.
//! The scope a call needs follows from the request alone (method and
//! actor), so it is checked before any work.

use std::fmt;

use super::{TenantId, command::Actor, error::CartError};

/// What a key may do (the contract's "Credentials and scopes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// GetCart, ListCarts.
    Read,
    /// Every change but confirming, and cancelling with no actor.
    Write,
    /// WatchCart, WatchCarts.
    Watch,
    /// ConfirmCart and CancelCart as ACTOR_CUSTOMER.
    Customer,
    /// ConfirmCart and CancelCart as ACTOR_PROVIDER.
    Provider,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Write,
        Scope::Watch,
        Scope::Customer,
        Scope::Provider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Watch => "watch",
            Scope::Customer => "customer",
            Scope::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }

    /// The scope of ConfirmCart and CancelCart: the actor's, or `write`
    /// for a cancel that names no actor.
    pub fn of_actor(actor: Option<Actor>) -> Scope {
        match actor {
            Some(Actor::Customer) => Scope::Customer,
            Some(Actor::Provider) => Scope::Provider,
            None => Scope::Write,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const EVERY: Scopes = Scopes(0b1_1111);

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

/// Why a call is not authenticated (safe to tell the caller).
pub type AuthFailure = &'static str;

/// What authentication found for a call; put in each request's extensions
/// once, read by logs, admission and the services.
#[derive(Debug, Clone)]
pub struct Authentication(pub Result<Caller, AuthFailure>);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub scopes: Scopes,
}

impl Caller {
    /// The caller's tenant when its key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<&TenantId, CartError> {
        if self.scopes.contains(scope) {
            Ok(&self.tenant)
        } else {
            Err(CartError::MissingScope(scope))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_exactly_their_members() {
        let s = Scopes::of(&[Scope::Read, Scope::Provider]);
        let held: Vec<_> = Scope::ALL.into_iter().filter(|x| s.contains(*x)).collect();
        assert_eq!(held, [Scope::Read, Scope::Provider]);
        assert!(Scope::ALL.into_iter().all(|x| Scopes::EVERY.contains(x)));
        for sc in Scope::ALL {
            assert_eq!(Scope::parse(sc.as_str()), Some(sc));
        }
        assert_eq!(Scope::parse("admin"), None);
    }
}
