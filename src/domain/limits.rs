//! Size limits of the contract and of our own choosing, in one place.

/// Lines per cart.
pub const MAX_LINES: usize = 500;
/// Quantity of one line.
pub const MAX_QUANTITY: i32 = 100_000;
/// Characters of an SKU.
pub const MAX_SKU_CHARS: usize = 128;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 2_048;
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_CHANNEL_CHARS: usize = 64;
pub const MAX_URL_CHARS: usize = 2_048;
pub const MAX_REASON_CHARS: usize = 512;
/// Entries of a metadata or attributes map, and the size of their keys and values.
pub const MAX_MAP_ENTRIES: usize = 64;
pub const MAX_MAP_KEY_CHARS: usize = 128;
pub const MAX_MAP_VALUE_CHARS: usize = 1_024;
/// ListCarts page size.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Encoded size of one cart (`CART_TOO_LARGE` past it), so that a client
/// with default settings (4 MiB per message) can always read it.
pub const MAX_CART_BYTES: usize = 1024 * 1024;
/// Encoded size of one ListCarts page: it ends early rather than grow past it.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
