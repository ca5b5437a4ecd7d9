//! The bound on a cart's size on the wire: any gRPC client with default
//! settings (4 MiB per message) must be able to read a whole cart, and a
//! ListCarts page must fit in one message too.
//!
//! [`encoded_len`] is an upper bound of the protobuf encoding of the
//! `cart.v1.Cart` a cart becomes (every field counted with a two-byte tag,
//! amounts at their widest), within a few bytes per field of the real
//! length; `grpc::convert` tests that it never undercounts.

use super::{cart::Cart, error::CartError, limits::MAX_CART_BYTES, line::LineItem};

/// Widest rendering of an amount (1e12 x 100000 x 500 lines, 3 decimals).
const AMOUNT: usize = 32;
/// A UUID as text.
const UUID: usize = 36;
/// An enum, int32 or int64 value with its tag.
const NUMBER: usize = 2 + 10;
/// A Timestamp message with its tag.
const TIMESTAMP: usize = 2 + 1 + 11 + 6;

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// A length-delimited field of `len` bytes, tag included.
fn field(len: usize) -> usize {
    2 + varint_len(len) + len
}

fn map(entries: &std::collections::BTreeMap<String, String>) -> usize {
    entries
        .iter()
        .map(|(k, v)| field(field(k.len()) + field(v.len())))
        .sum()
}

/// An upper bound of the encoded length of a line's `LineItem` field (tag
/// and length included).
pub fn line(l: &LineItem) -> usize {
    *l.memo.size_bound.get_or_init(|| {
        field(
            field(l.sku.len())
                + field(l.name.len())
                + NUMBER
                + 3 * field(AMOUNT)
                + map(&l.attributes),
        )
    })
}

/// An upper bound of the encoded length of the cart's `cart.v1.Cart`.
pub fn encoded_len(c: &Cart) -> usize {
    let strings = [
        UUID,
        c.customer_id.len(),
        c.reference.len(),
        3,
        2,
        c.channel.len(),
        c.description.len(),
        c.callback_url.len(),
        c.callback_cancel_url.len(),
        UUID,
        c.cancel_reason.len(),
    ];
    strings.iter().map(|&n| field(n)).sum::<usize>()
        + map(&c.metadata)
        + c.items.iter().map(|l| line(l)).sum::<usize>()
        + 3 * field(AMOUNT)
        + 4 * NUMBER
        + 3 * TIMESTAMP
}

/// Refuses a change that leaves the cart above [`MAX_CART_BYTES`] and
/// larger than it was (`before`: None for a new cart), so that a cart
/// already past the bound can still shrink and finish its checkout.
pub fn check_growth(before: Option<&Cart>, after: &Cart) -> Result<(), CartError> {
    let bytes = encoded_len(after);
    if bytes <= MAX_CART_BYTES || before.is_some_and(|b| encoded_len(b) >= bytes) {
        return Ok(());
    }
    Err(CartError::CartTooLarge {
        bytes,
        limit: MAX_CART_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_seven_bits_a_byte() {
        let cases = [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)];
        for (n, len) in cases {
            assert_eq!(varint_len(n), len, "{n}");
        }
    }
}
