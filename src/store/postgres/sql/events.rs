//! Reading the event log, for watchers and the feed's publisher.

/// An event query: `$ev` picks events; each comes (kind 3) with the head
/// and line states (kinds 1, 2) its cart had at its version; `$bound`, when
/// given, answers one more row (kind 4) with a resume bound in column a.
macro_rules! events {
    ($ev:literal, $bound:literal) => {
        concat!(
            events!($ev),
            " UNION ALL SELECT 4, NULL, (",
            $bound,
            "), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        )
    };
    ($ev:literal) => {
        concat!(
            "WITH ev AS (SELECT sequence, tenant, cart_id, version, type, previous_status, status, \
             occurred_at, expires_at, cart FROM cart_events ",
            $ev,
            "), span AS (SELECT tenant, cart_id, min(version) AS lo, max(version) AS hi FROM ev \
             WHERE cart IS NULL GROUP BY tenant, cart_id) \
             SELECT 3, cart_id, sequence, version, NULL::int8, tenant, type, previous_status, status, \
             occurred_at, expires_at, cart, NULL::int4, NULL::numeric, NULL::numeric FROM ev \
             UNION ALL SELECT 1, h.cart_id, h.valid_from, h.valid_to, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, h.doc, NULL, NULL, NULL \
             FROM span CROSS JOIN LATERAL (SELECT * FROM cart_heads h \
             WHERE h.tenant = span.tenant AND h.cart_id = span.cart_id \
             AND h.valid_from <= span.hi AND (h.valid_to IS NULL OR h.valid_to > span.lo) OFFSET 0) h \
             UNION ALL SELECT 2, l.cart_id, l.valid_from, l.valid_to, l.position, l.sku, l.name, NULL, NULL, \
             NULL, NULL, l.attributes, l.quantity, l.unit_price, l.list_price \
             FROM span CROSS JOIN LATERAL (SELECT * FROM cart_lines l \
             WHERE l.tenant = span.tenant AND l.cart_id = span.cart_id \
             AND l.valid_from <= span.hi AND (l.valid_to IS NULL OR l.valid_to > span.lo) OFFSET 0) l"
        )
    };
}

/// $1 tenant, $2 after sequence, $3 head, $4 limit; with the compaction
/// point (kind 4), read in the same snapshot as the events.
pub const TENANT_EVENTS: &str = events!(
    "WHERE tenant = $1 AND sequence > $2 AND sequence <= $3 ORDER BY sequence LIMIT $4",
    "SELECT compacted_through FROM cart_events_compaction"
);

/// $1 tenant, $2 cart, $3 after version, $4 limit; with the cart's oldest
/// version held (kind 4; NULL when it has none), read in the same snapshot.
pub const CART_EVENTS: &str = events!(
    "WHERE tenant = $1 AND cart_id = $2 AND version > $3 ORDER BY version LIMIT $4",
    "SELECT min(version) FROM cart_events WHERE tenant = $1 AND cart_id = $2"
);

/// $1 tenant, $2 cart.
pub const CURRENT_EVENT: &str =
    events!("WHERE tenant = $1 AND cart_id = $2 ORDER BY version DESC LIMIT 1");

/// The cart at one version (what an idempotency key answers): $1 tenant,
/// $2 cart, $3 version.
pub const CART_AT_VERSION: &str = events!("WHERE tenant = $1 AND cart_id = $2 AND version = $3");

/// Every tenant's events in ($1, $2], for the publisher; $3 limit.
pub const EVENTS_BETWEEN: &str =
    events!("WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT $3");

/// The last sequence handed out (0 before the first).
pub const LAST_SEQUENCE: &str = "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('cart_events', 'sequence')::regclass), 0)";

/// The transaction ids of the event writers running now: sessions of this
/// database (other than this one) holding a write lock on `cart_events`
/// with a transaction id. A writer takes that lock when its statement
/// starts and its transaction id when it writes the cart row, both before
/// it takes its sequence, and keeps both until it ends; so a transaction
/// that may still commit a sequence at or below the one just read is among
/// these. A transaction that writes no event (a migration, a batch job, a
/// session left idle in a transaction) is not, and never holds watchers back.
pub const EVENT_WRITERS: &str = "SELECT coalesce(array_agg(a.backend_xid::text::bigint), '{}') \
     FROM pg_stat_activity a \
     WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() \
       AND EXISTS (SELECT 1 FROM pg_locks l \
                   WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' \
                     AND l.relation = 'cart_events'::regclass \
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// The channel of "look again" notifications for the event feed.
pub const CHANNEL: &str = "cart_events";
