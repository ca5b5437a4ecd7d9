//! The ports: what the use cases (`crate::usecase`) and the watchers
//! (`crate::watch`) need from storage, as narrow traits beside the domain,
//! each with its contract. The adapters in `crate::store` implement them;
//! `tests/api/ports.rs` checks every contract over every adapter.
//!
//! Rules (idempotency windows, the retry on a lost race, callback
//! decisions, expiry) live in the use cases, never here: an adapter only
//! stores and reads.

pub mod events;
pub mod outbox;
pub mod repository;
pub mod retention;

pub use events::EventLog;
pub use outbox::{Backlog, Budget, Claim, Delivery, DeliveryState, Outbox, Outcome, endpoint_of};
pub use repository::{
    CartPage, CartRepository, Conflict, Inserted, Isolation, KeyRecord, ListQuery, Loaded,
    PageBuilder, PageCursor, Remembered, UnitOfWork, Write,
};
pub use retention::Retention;

/// Every port one store adapter provides, for wiring it once.
pub trait Store: CartRepository + EventLog + Outbox + Retention {}

impl<T: CartRepository + EventLog + Outbox + Retention> Store for T {}
