//! The cart domain: validated values, the cart aggregate and its status
//! machine. Pure code with no I/O; both stores and the gRPC layer build on it.

pub mod callback;
pub mod caller;
pub mod cart;
mod cart_lines;
pub mod command;
pub mod country;
pub mod error;
pub mod event;
pub mod limits;
pub mod line;
pub mod merge;
pub mod money;
pub mod size;
pub mod status;
pub mod text;

pub use caller::{AuthFailure, Authentication, Caller, Scope, Scopes};
pub use cart::{Cart, CartId, NewCart, Policy};
pub use command::{Actor, Command, Details, ItemInput};
pub use country::Country;
pub use error::{CartError, Compacted, FieldViolation, Reason};
pub use event::CartEvent;
pub use line::{LineItem, LineMemo};
pub use merge::{MergeOutcome, MergeStrategy, merge};
pub use money::{Amount, Currency};
pub use status::{CartStatus, ConfirmationType, EventType};

pub mod clock;

pub use clock::now;

/// The owner of a set of carts, taken from the caller's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub String);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A caller-chosen idempotency key with the fingerprint of the request it
/// was first used for (a hash of the request without its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}
