//! Domain -> proto: renders carts and events as the wire shows them
//! (amounts in the currency's minor unit, timestamps, enum values).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::{
    domain::{Cart, CartEvent, CartStatus, ConfirmationType, EventType},
    proto,
    watch::Watched,
};

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn status_to_proto(s: CartStatus) -> proto::CartStatus {
    match s {
        CartStatus::Active => proto::CartStatus::Active,
        CartStatus::AwaitingCustomer => proto::CartStatus::AwaitingCustomer,
        CartStatus::AwaitingProvider => proto::CartStatus::AwaitingProvider,
        CartStatus::Confirmed => proto::CartStatus::Confirmed,
        CartStatus::Cancelled => proto::CartStatus::Cancelled,
        CartStatus::Expired => proto::CartStatus::Expired,
        CartStatus::Merged => proto::CartStatus::Merged,
    }
}

pub fn event_type_to_proto(t: EventType) -> proto::CartEventType {
    match t {
        EventType::Created => proto::CartEventType::Created,
        EventType::ItemsChanged => proto::CartEventType::ItemsChanged,
        EventType::DetailsChanged => proto::CartEventType::DetailsChanged,
        EventType::StatusChanged => proto::CartEventType::StatusChanged,
    }
}

pub fn confirmation_to_proto(c: ConfirmationType) -> proto::ConfirmationType {
    match c {
        ConfirmationType::Automatic => proto::ConfirmationType::Automatic,
        ConfirmationType::ServerCallback => proto::ConfirmationType::ServerCallback,
        ConfirmationType::Manual => proto::ConfirmationType::Manual,
    }
}

pub fn cart_to_proto(c: &Cart) -> proto::Cart {
    cart_into_proto(c.clone())
}

/// As [`cart_to_proto`], taking the cart: its strings and maps move into
/// the message instead of being copied.
pub fn cart_into_proto(c: Cart) -> proto::Cart {
    let cur = c.currency;
    let totals = c.totals();
    let item_quantity = c.item_quantity();
    proto::Cart {
        id: c.id.to_string(),
        customer_id: c.customer_id,
        reference: c.reference,
        currency: cur.code().to_string(),
        country: c.country.map(|c| c.code().to_string()).unwrap_or_default(),
        channel: c.channel,
        description: c.description,
        metadata: c.metadata,
        confirmation_type: confirmation_to_proto(c.confirmation_type) as i32,
        callback_url: c.callback_url,
        callback_cancel_url: c.callback_cancel_url,
        status: status_to_proto(c.status) as i32,
        items: c
            .items
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .map(|l| proto::LineItem {
                unit_price: cur.format(l.unit_price),
                list_price: cur.format(l.list_price),
                line_total: cur.format(l.line_total()),
                sku: l.sku,
                name: l.name,
                quantity: l.quantity,
                attributes: l.attributes,
            })
            .collect(),
        subtotal: cur.format(totals.subtotal),
        discount_total: cur.format(totals.discount),
        total: cur.format(totals.total),
        item_quantity,
        version: c.version,
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        expires_at: c.expires_at.map(timestamp),
        merged_into_cart_id: c
            .merged_into_cart_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        cancel_reason: c.cancel_reason,
    }
}

pub fn event_to_proto(e: &CartEvent) -> proto::CartEvent {
    proto::CartEvent {
        sequence: e.sequence,
        cart_id: e.cart.id.to_string(),
        version: e.version(),
        r#type: event_type_to_proto(e.event_type) as i32,
        status: status_to_proto(e.cart.status) as i32,
        previous_status: e
            .previous_status
            .map_or(proto::CartStatus::Unspecified, status_to_proto)
            as i32,
        occurred_at: Some(timestamp(e.occurred_at)),
        cart: Some(cart_to_proto(&e.cart)),
    }
}

/// A WatchCarts progress marker: a position, not a change (no cart).
pub fn progress_to_proto(sequence: i64, at: DateTime<Utc>) -> proto::CartEvent {
    proto::CartEvent {
        sequence,
        r#type: proto::CartEventType::Progress as i32,
        occurred_at: Some(timestamp(at)),
        ..Default::default()
    }
}

/// What a watcher hands its client, as the wire shows it.
pub fn watched_to_proto(w: &Watched) -> proto::CartEvent {
    match w {
        Watched::Event(e) => event_to_proto(e),
        Watched::Progress { sequence, at } => progress_to_proto(*sequence, *at),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::{cart::tests as carts, size::encoded_len};

    /// The domain's size bound never undercounts the real encoding, and
    /// stays close to it (so the 1 MiB bound is not much stricter than said).
    #[test]
    fn the_size_bound_covers_the_encoding() {
        let mut small = carts::new_cart("USD", vec![carts::item("A", 1, "1.50")]);
        let mut big = carts::new_cart("BHD", Vec::new());
        for i in 0..40 {
            let mut it = carts::item(&format!("SKU-{i}"), 99_999, "999999999.999");
            for a in 0..64 {
                it.attributes.insert(format!("k{a}"), "v".repeat(i * 25));
            }
            big.items.push(std::sync::Arc::new(crate::domain::LineItem {
                sku: it.sku,
                name: "n".repeat(200),
                quantity: it.quantity,
                unit_price: it.unit_price.0,
                list_price: it.unit_price.0,
                attributes: it.attributes,
                memo: Default::default(),
            }));
        }
        big.metadata.insert("m".into(), "x".repeat(1000));
        big.merged_into_cart_id = Some(big.id);
        for c in [&mut small, &mut big] {
            let real = cart_to_proto(c).encoded_len();
            let bound = encoded_len(c);
            assert!(bound >= real, "bound {bound} < real {real}");
            assert!(
                bound <= real + real / 10 + 1024,
                "bound {bound} far above {real}"
            );
        }
    }
}
