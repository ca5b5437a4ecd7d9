//! The cart repository port: carts, their idempotency keys, and the units
//! of work that change them.
//!
//! Contract of every [`CartRepository`] and its [`UnitOfWork`]s:
//! - a unit of work changes carts atomically: in `Isolation::Locked` all of
//!   its inserts and saves take effect at `commit` or none does (dropping it
//!   uncommitted, or `rollback`, discards them); in `Isolation::Optimistic`
//!   and `Isolation::Remembered` each insert or save is atomic on its own
//!   and takes effect at once;
//! - in `Isolation::Remembered` a load may answer carts as this process
//!   last read or wrote them rather than as they are stored
//!   (`Loaded::unconfirmed`); a save of such a cart that is no longer the
//!   stored one is `Conflict::Stale` and writes nothing;
//! - in `Isolation::Locked` the carts a unit loads stay locked until it
//!   ends: no other unit saves them meanwhile;
//! - `save` writes the next version of a cart only if the stored version is
//!   the one before it, otherwise `Conflict::Raced` and nothing is written;
//!   it saves a cart the same unit loaded (`load` or `load_expired`), so an
//!   adapter may write only what differs from what it loaded;
//!   with the cart it appends the change's event (see `crate::ports::events`),
//!   records the idempotency key (if given) and the callback delivery (if
//!   given) in the same atomic step;
//! - a key is recorded at most once per tenant: recording a key that is
//!   already stored, at any age, is `Conflict::KeyTaken` and writes nothing;
//! - a reference is used by at most one cart per tenant;
//! - carts of one tenant are invisible to every other tenant.
//!
//! A unit of work reads before it writes: what a load sees after a save of
//! the same unit is not specified.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Cart, CartError, CartId, CartStatus, IdempotencyKey, TenantId, callback::CallbackDue,
    cart::Change, limits::MAX_PAGE_BYTES, size::encoded_len,
};

#[async_trait]
pub trait CartRepository: Send + Sync + 'static {
    /// `CartNotFound` for a cart the tenant does not have.
    async fn get(&self, tenant: &TenantId, id: CartId) -> Result<Cart, CartError>;

    /// The tenant's carts, newest first (`created_at`, then id, descending).
    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<CartPage, CartError>;

    /// Opens a unit of work.
    async fn begin(&self, isolation: Isolation) -> Result<Box<dyn UnitOfWork>, CartError>;

    /// Deletes the tenant's `key` if it was recorded at or before `cutoff`;
    /// a younger key stays.
    async fn forget_key(
        &self,
        tenant: &TenantId,
        key: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<(), CartError>;

    /// Deletes up to `limit` keys (of any tenant) recorded at or before
    /// `cutoff`; answers how many.
    async fn forget_keys_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, CartError>;

    /// Ok when the store can serve.
    async fn check_health(&self) -> Result<(), CartError>;
}

#[async_trait]
pub trait UnitOfWork: Send {
    /// The tenant's carts among `ids` (those that exist, in any order) and
    /// what `key` remembers (at any age). Locks the carts in `Locked`.
    async fn load(
        &mut self,
        tenant: &TenantId,
        ids: &[CartId],
        key: Option<&str>,
    ) -> Result<Loaded, Conflict>;

    /// Up to `limit` carts of any tenant with `expires_at` at or before
    /// `now`, skipping carts another unit of work holds. Needs `Locked`.
    async fn load_expired(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TenantId, Cart)>, Conflict>;

    /// Inserts a new cart (version 1) with its CREATED event, recording
    /// `key` (with the cart as its response) and `fingerprint` (of the
    /// create request, for its reference). A reference already used
    /// answers that cart and its fingerprint, and inserts nothing.
    async fn insert(
        &mut self,
        tenant: &TenantId,
        cart: &Cart,
        fingerprint: [u8; 32],
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, Conflict>;

    /// Writes `write.cart` as the next version of its cart (see the module
    /// contract), with its event, key and callback.
    async fn save(
        &mut self,
        tenant: &TenantId,
        write: &Write<'_>,
        key: Option<KeyRecord<'_>>,
    ) -> Result<(), Conflict>;

    /// Ends the unit, keeping its changes.
    async fn commit(self: Box<Self>) -> Result<(), Conflict>;

    /// Ends the unit, discarding what `Locked` has not committed.
    async fn rollback(self: Box<Self>);
}

/// How a unit of work isolates itself from concurrent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Nothing is locked; each insert or save is atomic on its own and a
    /// save checks the version (Postgres: one statement, no transaction).
    Optimistic,
    /// Loaded carts are locked and everything commits together.
    Locked,
    /// As `Optimistic`, and a load may answer carts from the store's memory
    /// of them: a change then costs only its write, which checks the
    /// version and so confirms what was loaded.
    Remembered,
}

/// Why a step of a unit of work did not take effect. The use case decides
/// what follows; `Failed` ends the call.
#[derive(Debug)]
pub enum Conflict {
    /// The stored version was not the one before the write: another
    /// writer got there first.
    Raced,
    /// The idempotency key is stored already (a concurrent call with the
    /// same key, or a key past its window not yet forgotten).
    KeyTaken,
    /// A transient failure (serialization failure, deadlock): running the
    /// whole unit again may succeed.
    Retry,
    /// The unit worked on remembered carts (`Loaded::unconfirmed`) that
    /// were not current: a unit that reads them afresh may succeed.
    Stale,
    Failed(CartError),
}

impl From<CartError> for Conflict {
    fn from(e: CartError) -> Self {
        Conflict::Failed(e)
    }
}

/// What a unit of work found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub carts: Vec<Cart>,
    pub remembered: Option<Remembered>,
    /// Some of `carts` came from memory (`Isolation::Remembered`): they may
    /// be out of date, so a decision taken on them that writes nothing (a
    /// refusal) holds only once they are read afresh.
    pub unconfirmed: bool,
}

impl Loaded {
    /// Takes the cart `id` out of what was loaded.
    pub fn take(&mut self, id: CartId) -> Result<Cart, CartError> {
        let at = self
            .carts
            .iter()
            .position(|c| c.id == id)
            .ok_or(CartError::CartNotFound)?;
        Ok(self.carts.swap_remove(at))
    }
}

/// An idempotency key as stored.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub fingerprint: Vec<u8>,
    pub response: Cart,
    pub recorded_at: DateTime<Utc>,
}

/// The next version of one cart, with what goes with it.
#[derive(Debug)]
pub struct Write<'a> {
    /// The cart after the change (its version already the next one).
    pub cart: &'a Cart,
    /// Its event's type and the status before.
    pub change: Change,
    pub at: DateTime<Utc>,
    /// The callback delivery the change calls for, if any.
    pub callback: Option<CallbackDue>,
}

/// An idempotency key to record, with the answer it replays.
#[derive(Debug, Clone, Copy)]
pub struct KeyRecord<'a> {
    pub key: &'a IdempotencyKey,
    pub response: &'a Cart,
}

/// What `insert` did.
#[derive(Debug)]
pub enum Inserted {
    Created,
    /// The reference names this cart, made by a request with `fingerprint`.
    ReferenceTaken {
        cart: Box<Cart>,
        fingerprint: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Empty: every customer.
    pub customer_id: String,
    /// Empty: every status.
    pub statuses: Vec<CartStatus>,
    pub page_size: usize,
    /// Carts strictly older (in list order) than this one.
    pub after: Option<PageCursor>,
}

/// A position in the newest-first list of a tenant's carts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub created_at: DateTime<Utc>,
    pub id: CartId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CartPage {
    pub carts: Vec<Cart>,
    /// Set when more carts may follow.
    pub next: Option<PageCursor>,
}

impl CartPage {
    /// A page from up to `page_size + 1` carts in list order: the extra one
    /// only says that more follow.
    pub fn from_overfetch(carts: Vec<Cart>, page_size: usize) -> CartPage {
        let mut page = PageBuilder::new(page_size);
        carts.into_iter().take_while(|c| page.offer(c)).count();
        page.finish()
    }
}

/// Fills one ListCarts page from carts offered in list order: it ends
/// after `page_size` carts, or earlier when the next cart would take the
/// encoded page past [`MAX_PAGE_BYTES`] (always at least one cart, so a
/// client can page through anything). The one rule for both stores.
pub struct PageBuilder {
    page_size: usize,
    bytes: usize,
    carts: Vec<Cart>,
    next: Option<PageCursor>,
}

/// Room kept for the page's own framing and its `next_page_token`.
const PAGE_OVERHEAD: usize = 1024;

impl PageBuilder {
    pub fn new(page_size: usize) -> PageBuilder {
        PageBuilder {
            page_size,
            bytes: PAGE_OVERHEAD,
            carts: Vec::new(),
            next: None,
        }
    }

    /// Offers the next cart; false once the page is complete (the cart was
    /// not taken, and more follow).
    pub fn offer(&mut self, cart: &Cart) -> bool {
        if self.next.is_some() {
            return false;
        }
        // A cart in a page: its bytes, tag and length prefix.
        let size = encoded_len(cart) + 8;
        let full = self.carts.len() == self.page_size
            || (!self.carts.is_empty() && self.bytes + size > MAX_PAGE_BYTES);
        if full {
            self.end_here();
            return false;
        }
        self.bytes += size;
        self.carts.push(cart.clone());
        true
    }

    /// Ends the page after the carts taken so far: more follow.
    pub fn end_here(&mut self) {
        self.next = self.carts.last().map(|c| PageCursor {
            created_at: c.created_at,
            id: c.id,
        });
    }

    pub fn finish(self) -> CartPage {
        CartPage {
            carts: self.carts,
            next: self.next,
        }
    }
}
