//! Cart events encoded once per replica: every watcher of a cart (ten per
//! cart in the fan-out benchmark) sends the same event, and rendering it
//! (amounts formatted, strings and maps copied into a proto message) and
//! encoding it was most of a delivery's server CPU. The first stream to
//! send an event encodes it; the others copy its bytes.
//!
//! Entries are found by sequence (a slot per sequence modulo `SLOTS`), so
//! an event read again from the log while catching up finds its live
//! encoding too. A slot is overwritten by a later sequence; the bytes held
//! are bounded by `BUDGET`, past which an encoding is used once and not kept.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use prost::Message as _;

use super::{convert::progress_to_proto, wire::encode_event};
use crate::{
    domain::{CartEvent, CartId},
    watch::Watched,
};

/// Slots: about a second of events at this machine's peak write rate; live
/// watchers send an event within milliseconds of each other.
const SLOTS: usize = 1024;

/// Bytes of encodings held at most (about: concurrent inserts may pass it
/// by an event or two). Carts are bounded at 1 MiB encoded.
const BUDGET: usize = 16 << 20;

struct Entry {
    sequence: i64,
    cart: CartId,
    version: i64,
    bytes: Bytes,
}

impl Entry {
    fn is(&self, ev: &CartEvent) -> bool {
        self.sequence == ev.sequence && self.cart == ev.cart.id && self.version == ev.version()
    }
}

pub struct EncodedEvents {
    slots: Box<[Mutex<Option<Entry>>]>,
    held: AtomicUsize,
}

impl Default for EncodedEvents {
    fn default() -> Self {
        EncodedEvents {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            held: AtomicUsize::new(0),
        }
    }
}

impl EncodedEvents {
    /// What a watcher hands its client, encoded as a `cart.v1.CartEvent`.
    pub fn watched(&self, w: &Watched) -> Bytes {
        match w {
            Watched::Event(ev) => self.event(ev),
            // A marker is one stream's own: nothing to share.
            Watched::Progress { sequence, at } => {
                progress_to_proto(*sequence, *at).encode_to_vec().into()
            }
        }
    }

    fn event(&self, ev: &CartEvent) -> Bytes {
        let slot = &self.slots[ev.sequence.rem_euclid(SLOTS as i64) as usize];
        let lock = || slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = lock().as_ref().filter(|e| e.is(ev)) {
            return entry.bytes.clone();
        }
        // Encoded outside the lock: another stream may encode it at the
        // same time, and one of the two encodings is kept.
        let bytes = encode_event(ev);
        let mut held = lock();
        if let Some(old) = held.take() {
            self.held.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
        if self.held.load(Ordering::Relaxed) + bytes.len() <= BUDGET {
            self.held.fetch_add(bytes.len(), Ordering::Relaxed);
            *held = Some(Entry {
                sequence: ev.sequence,
                cart: ev.cart.id,
                version: ev.version(),
                bytes: bytes.clone(),
            });
        }
        bytes
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        domain::{EventType, TenantId, cart::tests as carts},
        grpc::convert::watched_to_proto,
        proto,
    };

    fn event(sequence: i64, version: i64) -> CartEvent {
        let mut cart = carts::new_cart("USD", vec![carts::item("A", 1, "1.50")]);
        cart.version = version;
        CartEvent {
            sequence,
            tenant: TenantId("t".into()),
            event_type: EventType::ItemsChanged,
            previous_status: None,
            occurred_at: cart.updated_at,
            cart,
        }
    }

    fn decoded(b: &Bytes) -> proto::CartEvent {
        proto::CartEvent::decode(b.as_ref()).unwrap()
    }

    #[test]
    fn an_event_is_encoded_as_the_wire_shows_it_and_shared() {
        let cache = EncodedEvents::default();
        let w = Watched::Event(Arc::new(event(7, 3)));
        let first = cache.watched(&w);
        let again = cache.watched(&w);
        assert_eq!(decoded(&first), watched_to_proto(&w));
        // The same allocation: the second send copied no encoding.
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert_eq!(cache.held(), first.len());
    }

    #[test]
    fn a_later_sequence_in_the_same_slot_replaces_the_entry() {
        let cache = EncodedEvents::default();
        let a = Watched::Event(Arc::new(event(5, 1)));
        let b = Watched::Event(Arc::new(event(5 + SLOTS as i64, 2)));
        let ea = cache.watched(&a);
        let eb = cache.watched(&b);
        assert_eq!(decoded(&eb), watched_to_proto(&b));
        assert_eq!(cache.held(), eb.len());
        // `a` is encoded again, and right.
        assert_eq!(decoded(&cache.watched(&a)), decoded(&ea));
    }

    #[test]
    fn markers_are_encoded_each_time() {
        let cache = EncodedEvents::default();
        let m = Watched::Progress {
            sequence: 9,
            at: chrono::DateTime::UNIX_EPOCH,
        };
        assert_eq!(decoded(&cache.watched(&m)), watched_to_proto(&m));
        assert_eq!(cache.held(), 0);
    }
}
