//! A cart's `cart.v1.Cart` written straight from the domain value: the
//! bytes prost writes for `convert::cart_to_proto` (same fields, same
//! order; tested byte for byte below), without building the message first.
//! A 300-line answer built as a message copied every line's strings out of
//! the cart, formatted its amounts into 900 strings and dropped it all
//! again: 40% of the server's CPU per AddItems of such a cart.

use bytes::{BufMut, Bytes};
use prost::encoding::{self, WireType, encode_key, encode_varint};

use super::convert::{confirmation_to_proto, event_type_to_proto, status_to_proto, timestamp};
use crate::domain::{Cart, CartEvent, Currency, LineItem, size};

/// An answer written straight to the wire (see `codec::AnswerCodec`).
pub trait Answer: Send + 'static {
    /// At least the encoded length, within a few bytes a field.
    fn size_bound(&self) -> usize;
    fn encode(&self, buf: &mut impl BufMut);
}

impl Answer for Cart {
    fn size_bound(&self) -> usize {
        size::encoded_len(self)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        encode_cart(self, buf)
    }
}

/// A message already encoded (a watch event, once per replica).
impl Answer for Bytes {
    fn size_bound(&self) -> usize {
        self.len()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(self)
    }
}

/// A ListCarts answer: `cart.v1.ListCartsResponse`.
pub struct Page {
    pub carts: Vec<Cart>,
    pub next_page_token: String,
}

impl Answer for Page {
    fn size_bound(&self) -> usize {
        let carts: usize = self.carts.iter().map(|c| 6 + size::encoded_len(c)).sum();
        carts + 6 + self.next_page_token.len()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        // Each cart is written once into a scratch buffer for its length.
        let mut cart = Vec::new();
        for c in &self.carts {
            cart.clear();
            encode_cart(c, &mut cart);
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(cart.len() as u64, buf);
            buf.put_slice(&cart);
        }
        string(2, &self.next_page_token, buf);
    }
}

/// The encoded `cart.v1.Cart` of `c`, appended to `buf`.
pub fn encode_cart(c: &Cart, buf: &mut impl BufMut) {
    let cur = c.currency;
    let mut amounts = Amounts::default();
    string(
        1,
        c.id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
        buf,
    );
    string(2, &c.customer_id, buf);
    string(3, &c.reference, buf);
    string(4, cur.code(), buf);
    string(5, c.country.map(|c| c.code()).unwrap_or_default(), buf);
    string(6, &c.channel, buf);
    string(7, &c.description, buf);
    map(8, &c.metadata, buf);
    int(9, confirmation_to_proto(c.confirmation_type) as i64, buf);
    string(10, &c.callback_url, buf);
    string(11, &c.callback_cancel_url, buf);
    int(12, status_to_proto(c.status) as i64, buf);
    for l in &c.items {
        line(13, l, cur, buf);
    }
    let t = c.totals();
    for (tag, amount) in [(14, t.subtotal), (15, t.discount), (16, t.total)] {
        amounts.set(cur, &[amount]);
        string(tag, amounts.get(0), buf);
    }
    int(17, c.item_quantity(), buf);
    int(18, c.version, buf);
    encoding::message::encode(19, &timestamp(c.created_at), buf);
    encoding::message::encode(20, &timestamp(c.updated_at), buf);
    if let Some(at) = c.expires_at {
        encoding::message::encode(21, &timestamp(at), buf);
    }
    if let Some(id) = c.merged_into_cart_id {
        string(
            22,
            id.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
            buf,
        );
    }
    string(23, &c.cancel_reason, buf);
}

/// The encoded `cart.v1.CartEvent` of `e` (the bytes prost writes for
/// `convert::event_to_proto`): rendered once per replica and shared by
/// every stream that sends it (`grpc::encoded`).
pub fn encode_event(e: &CartEvent) -> Bytes {
    let mut cart = Vec::with_capacity(size::encoded_len(&e.cart));
    encode_cart(&e.cart, &mut cart);
    let mut buf = Vec::with_capacity(cart.len() + 96);
    int(1, e.sequence, &mut buf);
    string(
        2,
        e.cart
            .id
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
        &mut buf,
    );
    int(3, e.version(), &mut buf);
    int(4, event_type_to_proto(e.event_type) as i64, &mut buf);
    int(5, status_to_proto(e.cart.status) as i64, &mut buf);
    let previous = e.previous_status.map_or(0, |s| status_to_proto(s) as i64);
    int(6, previous, &mut buf);
    encoding::message::encode(7, &timestamp(e.occurred_at), &mut buf);
    encode_key(8, WireType::LengthDelimited, &mut buf);
    encode_varint(cart.len() as u64, &mut buf);
    buf.put_slice(&cart);
    buf.into()
}

/// A line's unit_price, list_price and line_total.
const AMOUNT_TAGS: [u32; 3] = [4, 5, 6];

/// One `LineItem` (a length-delimited field `tag`), rendered once per line
/// and kept in its memo: an answer about a 300-line cart changed in one
/// line formats and encodes one line, and copies the other 299.
fn line(tag: u32, l: &LineItem, cur: Currency, buf: &mut impl BufMut) {
    let (rendered_in, bytes) = l.memo.rendered.get_or_init(|| (cur, render_line(l, cur)));
    // A line belongs to carts of one currency (merging refuses others);
    // should one ever be shown in another, it is rendered afresh.
    let fresh;
    let bytes = if *rendered_in == cur {
        bytes
    } else {
        fresh = render_line(l, cur);
        &fresh
    };
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// The encoded `cart.v1.LineItem` of `l` in a cart of currency `cur`.
fn render_line(l: &LineItem, cur: Currency) -> Box<[u8]> {
    let mut amounts = Amounts::default();
    amounts.set(cur, &[l.unit_price, l.list_price, l.line_total()]);
    let mut buf = Vec::with_capacity(size::line(l));
    string(1, &l.sku, &mut buf);
    string(2, &l.name, &mut buf);
    int(3, i64::from(l.quantity), &mut buf);
    for (i, tag) in AMOUNT_TAGS.into_iter().enumerate() {
        string(tag, amounts.get(i), &mut buf);
    }
    map(7, &l.attributes, &mut buf);
    buf.into_boxed_slice()
}

/// Up to three amounts formatted into one reused buffer.
#[derive(Default)]
struct Amounts {
    text: String,
    ends: [usize; 3],
}

impl Amounts {
    fn set(&mut self, cur: Currency, amounts: &[rust_decimal::Decimal]) {
        self.text.clear();
        for (end, a) in self.ends.iter_mut().zip(amounts) {
            cur.format_to(*a, &mut self.text);
            *end = self.text.len();
        }
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// A string field; proto3 leaves an empty one out.
fn string(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// An int32, int64 or enum field (negative int32s sign-extended, as
/// protobuf writes them); proto3 leaves a zero out.
fn int(tag: u32, v: i64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v as u64, buf);
    }
}

fn map(tag: u32, m: &std::collections::BTreeMap<String, String>, buf: &mut impl BufMut) {
    encoding::btree_map::encode(
        encoding::string::encode,
        encoding::string::encoded_len,
        encoding::string::encode,
        encoding::string::encoded_len,
        tag,
        m,
        buf,
    );
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use prost::Message as _;
    use rust_decimal::Decimal;

    use super::*;
    use crate::{
        domain::{CartStatus, ConfirmationType, Country, EventType, TenantId},
        grpc::convert::{cart_to_proto, event_to_proto},
        proto,
    };

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9-]{1,12}", "\\PC{0,20}"]
    }

    fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(text(), text(), 0..4)
    }

    fn amount() -> impl Strategy<Value = Decimal> {
        (0i64..10_000_000_000, 0u32..=4).prop_map(|(m, scale)| Decimal::new(m, scale))
    }

    fn line() -> impl Strategy<Value = LineItem> {
        (text(), text(), -5i32..100_000, amount(), amount(), map()).prop_map(
            |(sku, name, quantity, unit_price, list_price, attributes)| LineItem {
                sku,
                name,
                quantity,
                unit_price,
                list_price,
                attributes,
                memo: Default::default(),
            },
        )
    }

    fn time() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..4_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
    }

    prop_compose! {
        fn cart()(
            strings in prop::collection::vec(text(), 7),
            metadata in map(),
            currency in prop::sample::select(vec!["USD", "JPY", "BHD", "EUR"]),
            country in prop::option::of(Just("DE")),
            status in prop::sample::select(vec![
                CartStatus::Active, CartStatus::AwaitingCustomer, CartStatus::Confirmed,
                CartStatus::Cancelled, CartStatus::Merged,
            ]),
            confirmation_type in prop::sample::select(vec![
                ConfirmationType::Automatic, ConfirmationType::ServerCallback, ConfirmationType::Manual,
            ]),
            items in prop::collection::vec(line(), 0..12),
            version in 0i64..1_000_000,
            times in (time(), time(), prop::option::of(time())),
            merged in prop::option::of(any::<u128>()),
        ) -> Cart {
            Cart {
                id: uuid::Uuid::from_u128(u128::from(version as u64) << 64 | 7),
                customer_id: strings[0].clone(),
                reference: strings[1].clone(),
                currency: Currency::parse(currency).expect("known"),
                country: country.and_then(Country::parse),
                channel: strings[2].clone(),
                description: strings[3].clone(),
                metadata,
                confirmation_type,
                callback_url: strings[4].clone(),
                callback_cancel_url: strings[5].clone(),
                status,
                items: items.into_iter().map(Arc::new).collect(),
                version,
                created_at: times.0,
                updated_at: times.1,
                expires_at: times.2,
                merged_into_cart_id: merged.map(uuid::Uuid::from_u128),
                cancel_reason: strings[6].clone(),
            }
        }
    }

    proptest! {
        #[test]
        fn writes_the_bytes_prost_writes_for_the_message(c in cart()) {
            let mut written = Vec::new();
            c.encode(&mut written);
            prop_assert!(c.size_bound() >= written.len());
            prop_assert_eq!(written, cart_to_proto(&c).encode_to_vec());
        }

        #[test]
        fn lines_kept_rendered_stay_true_when_the_cart_changes(
            mut c in cart(),
            changed in line(),
            currency in prop::sample::select(vec!["USD", "JPY", "BHD"]),
        ) {
            let mut first = Vec::new();
            c.encode(&mut first); // every line keeps its rendering
            if !c.items.is_empty() {
                c.items[0] = Arc::new(changed); // as a change replaces a line
            }
            c.currency = Currency::parse(currency).expect("known");
            let mut again = Vec::new();
            c.encode(&mut again);
            prop_assert_eq!(again, cart_to_proto(&c).encode_to_vec());
        }

        #[test]
        fn writes_an_event_as_prost_writes_it(
            c in cart(),
            sequence in 0i64..i64::MAX,
            event_type in prop::sample::select(vec![
                EventType::Created, EventType::ItemsChanged, EventType::DetailsChanged,
                EventType::StatusChanged,
            ]),
            previous_status in prop::option::of(prop::sample::select(vec![
                CartStatus::Active, CartStatus::AwaitingCustomer, CartStatus::Confirmed,
            ])),
            occurred_at in time(),
        ) {
            let e = CartEvent {
                sequence,
                tenant: TenantId("t".into()),
                event_type,
                previous_status,
                occurred_at,
                cart: c,
            };
            prop_assert_eq!(encode_event(&e).to_vec(), event_to_proto(&e).encode_to_vec());
        }

        #[test]
        fn writes_a_page_as_prost_writes_it(
            carts in prop::collection::vec(cart(), 0..4),
            next_page_token in text(),
        ) {
            let message = proto::ListCartsResponse {
                carts: carts.iter().map(cart_to_proto).collect(),
                next_page_token: next_page_token.clone(),
            };
            let page = Page { carts, next_page_token };
            let mut written = Vec::new();
            page.encode(&mut written);
            prop_assert!(page.size_bound() >= written.len());
            prop_assert_eq!(written, message.encode_to_vec());
        }
    }
}
