//! The statements of the Postgres store. Each change is ONE statement: the
//! cart row, its event and its idempotency key are written together by a
//! data-modifying CTE, so a change commits in one round trip.

/// $1 tenant, $2 id.
pub const GET_CART: &str = "SELECT doc FROM carts WHERE tenant = $1 AND id = $2";

/// As GET_CART, holding the row until the transaction ends.
pub const LOCK_CART: &str = "SELECT doc FROM carts WHERE tenant = $1 AND id = $2 FOR UPDATE";

/// $1 tenant, $2 ids.
pub const GET_CARTS: &str = "SELECT doc FROM carts WHERE tenant = $1 AND id = ANY($2)";

/// $1 tenant, $2 ids; locks in id order so that two merges cannot deadlock.
pub const LOCK_CARTS: &str =
    "SELECT doc FROM carts WHERE tenant = $1 AND id = ANY($2) ORDER BY id FOR UPDATE";

/// $1 tenant, $2 key (at any age: the use case judges the window).
pub const GET_KEY: &str = "SELECT fingerprint, response, created_at FROM idempotency_keys \
     WHERE tenant = $1 AND key = $2";

/// $1 tenant, $2 key, $3 cutoff: forgets a key older than the window so it can be used again.
pub const FORGET_KEY: &str =
    "DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2 AND created_at <= $3";

/// $1 tenant, $2 reference.
pub const GET_BY_REFERENCE: &str =
    "SELECT doc, create_fingerprint FROM carts WHERE tenant = $1 AND reference = $2";

/// Inserts a cart with its CREATED event and key. Answers 0 when the
/// reference is taken. $1 tenant, $2 id, $3 status, $4 customer, $5
/// reference (NULL: none), $6 now, $7 expires, $8 fingerprint, $9 doc,
/// $10 key (NULL: none), $11 key fingerprint.
pub const INSERT_CART: &str = "
WITH ins AS (
    INSERT INTO carts (tenant, id, version, status, customer_id, reference, created_at, updated_at,
                       expires_at, create_fingerprint, doc)
    VALUES ($1, $2, 1, $3, $4, $5, $6, $6, $7, $8, $9)
    ON CONFLICT DO NOTHING
    RETURNING id
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart)
    SELECT $1, id, 1, 'CREATED', $3, NULL, $6, $9 FROM ins
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, response, created_at)
    SELECT $1, $10, $11, $9, $6 FROM ins WHERE $10::text IS NOT NULL
)
SELECT count(*) FROM ins";

/// Writes the next version of a cart with its event (and key). Answers 0
/// when the stored version is no longer $3 - 1 (a concurrent change won).
/// $1 tenant, $2 id, $3 new version, $4 status, $5 customer, $6 now, $7
/// expires, $8 doc, $9 event type, $10 previous status, $11 key (NULL:
/// none), $12 key fingerprint, $13 response to remember, $14 callback id,
/// $15 callback URL (NULL: no callback due), $16 callback payload.
pub const WRITE_CART: &str = "
WITH upd AS (
    UPDATE carts SET version = $3, status = $4, customer_id = $5, updated_at = $6, expires_at = $7, doc = $8
    WHERE tenant = $1 AND id = $2 AND version = $3::bigint - 1
    RETURNING id
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart)
    SELECT $1, id, $3, $9, $4, $10, $6, $8 FROM upd
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, response, created_at)
    SELECT $1, $11, $12, $13, $6 FROM upd WHERE $11::text IS NOT NULL
), cb AS (
    INSERT INTO callback_deliveries (id, tenant, cart_id, version, url, payload, next_attempt_at, created_at)
    SELECT $14, $1, id, $3, $15, $16, $6, $6 FROM upd WHERE $15::text IS NOT NULL
)
SELECT count(*) FROM upd";

/// $1 tenant, $2 customer ('' = all), $3 statuses (empty = all), $4/$5
/// cursor (created_at, id; NULL = first page), $6 limit.
/// A page of carts: the document of each cart whose predecessors' JSON
/// adds up to less than `$7` bytes, NULL past it (so that one ListCarts of
/// large carts never brings more than about `$7` bytes into the server; a
/// NULL ends the page there).
pub const LIST_CARTS: &str = "
SELECT CASE WHEN sum(len) OVER w - len < $7 THEN doc END
FROM (
  SELECT created_at, id, doc, octet_length(doc::text) AS len FROM carts
  WHERE tenant = $1
    AND ($2 = '' OR customer_id = $2)
    AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
    AND ($4::timestamptz IS NULL OR (created_at, id) < ($4::timestamptz, $5::uuid))
  ORDER BY created_at DESC, id DESC
  LIMIT $6
) page
WINDOW w AS (ORDER BY created_at DESC, id DESC)
ORDER BY created_at DESC, id DESC";

/// An event query: the columns `event_from_row` reads, then `$rest`.
macro_rules! events {
    ($rest:literal) => {
        concat!(
            "SELECT sequence, tenant, type, previous_status, occurred_at, cart FROM cart_events ",
            $rest
        )
    };
}

/// $1 tenant, $2 after sequence, $3 head, $4 limit. The columns
/// `event_from_row` reads, then the compaction point, read in the same
/// snapshot as the events; with no event, one row of NULLs carries it.
pub const TENANT_EVENTS: &str = "
SELECT e.sequence, e.tenant, e.type, e.previous_status, e.occurred_at, e.cart, k.compacted_through
FROM cart_events_compaction k
LEFT JOIN LATERAL (
    SELECT sequence, tenant, type, previous_status, occurred_at, cart FROM cart_events
    WHERE tenant = $1 AND sequence > $2 AND sequence <= $3 ORDER BY sequence LIMIT $4
) e ON true
ORDER BY e.sequence";

/// $1 tenant, $2 cart, $3 after version, $4 limit. The columns
/// `event_from_row` reads, then the cart's oldest version held, read in the
/// same snapshot (no row: nothing after $3, so nothing to check).
pub const CART_EVENTS: &str = "
SELECT sequence, tenant, type, previous_status, occurred_at, cart,
       (SELECT min(version) FROM cart_events WHERE tenant = $1 AND cart_id = $2)
FROM cart_events WHERE tenant = $1 AND cart_id = $2 AND version > $3 ORDER BY version LIMIT $4";

/// $1 tenant, $2 cart.
pub const CURRENT_EVENT: &str =
    events!("WHERE tenant = $1 AND cart_id = $2 ORDER BY version DESC LIMIT 1");

/// Every tenant's events in ($1, $2], for the publisher; $3 limit.
pub const EVENTS_BETWEEN: &str =
    events!("WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT $3");

/// The last sequence handed out (0 before the first).
pub const LAST_SEQUENCE: &str = "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('cart_events', 'sequence')::regclass), 0)";

/// The transaction ids running now in this database (other sessions).
pub const RUNNING_XIDS: &str = "SELECT coalesce(array_agg(backend_xid::text::bigint), '{}') \
     FROM pg_stat_activity \
     WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()";

/// Carts past their expiry, locked, skipping those another sweeper holds.
/// $1 now, $2 limit.
pub const DUE_CARTS: &str = "SELECT tenant, doc FROM carts WHERE expires_at <= $1 \
     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED";

pub const CHANNEL: &str = "cart_events";

/// Deletes up to $2 idempotency keys created at or before $1, skipping
/// those another replica's sweep (or a purge) is deleting.
pub const FORGET_OLD_KEYS: &str = "DELETE FROM idempotency_keys WHERE (tenant, key) IN \
     (SELECT tenant, key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// The compaction point, held until the transaction ends; no row when
/// another replica's purge holds it (that replica sweeps meanwhile).
pub const LOCK_COMPACTION: &str =
    "SELECT compacted_through FROM cart_events_compaction FOR UPDATE SKIP LOCKED";

/// One batch of event retention, under LOCK_COMPACTION (whose snapshot
/// came before this statement's, so it sees what earlier batches did).
/// $1 compaction point, $2 head (no sequence at or below it can still
/// commit), $3 before, $4 limit (rows deleted), $5 events examined.
/// Passes events after $1 in sequence order, stopping before the first
/// that occurred after $3 or that would take the deletions past $4: each
/// passed event is deleted unless it is its cart's current one (stale),
/// and its cart's event at or below $1, kept as current by an earlier
/// batch and superseded since, goes with it (orphaned). The compaction
/// point moves to the last event passed. Answers the rows deleted.
/// The memory store's `Events::purge` follows the same rule.
pub const PURGE_EVENTS: &str = "
WITH scan AS (
    SELECT e.sequence, e.tenant, e.cart_id, e.version, e.occurred_at > $3 AS young,
           c.version IS DISTINCT FROM e.version AS stale,
           (SELECT o.sequence FROM cart_events o WHERE o.tenant = e.tenant AND o.cart_id = e.cart_id
            ORDER BY o.version LIMIT 1) <= $1 AS orphaned
    FROM cart_events e
    LEFT JOIN carts c ON c.tenant = e.tenant AND c.id = e.cart_id
    WHERE e.sequence > $1 AND e.sequence <= $2
    ORDER BY e.sequence
    LIMIT $5
), costed AS (
    SELECT *, bool_or(young) OVER w AS stop, sum(stale::int + orphaned::int) OVER w AS spent
    FROM scan
    WINDOW w AS (ORDER BY sequence)
), passed AS (
    SELECT sequence, tenant, cart_id, version, stale, orphaned FROM costed WHERE NOT stop AND spent <= $4
), dropped AS (
    DELETE FROM cart_events d USING passed p
    WHERE p.stale AND d.sequence = p.sequence
    RETURNING 1
), orphans AS (
    DELETE FROM cart_events d USING passed p
    WHERE p.orphaned AND d.tenant = p.tenant AND d.cart_id = p.cart_id AND d.version < p.version
      AND d.sequence <= $1
    RETURNING 1
), moved AS (
    UPDATE cart_events_compaction SET compacted_through = p.last
    FROM (SELECT max(sequence) AS last FROM passed) p
    WHERE p.last IS NOT NULL
)
SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM orphans)";

/// One batch of cart retention: up to $2 carts in a final status whose
/// last change is at or before $1, with their events, callback deliveries
/// and the idempotency keys that answer them (today `response` is the cart
/// itself: its `id`; a key is recorded with a change of its cart, so no
/// later than the cart's last change, which lets the created_at index
/// find them). Shares the compaction row (see PURGE_EVENTS); skips carts,
/// keys and deliveries another transaction holds. Answers the carts deleted.
pub const PURGE_CARTS: &str = "
WITH held AS (
    SELECT one_row FROM cart_events_compaction FOR SHARE SKIP LOCKED
), doomed AS (
    SELECT tenant, id, updated_at FROM carts
    WHERE status IN ('CONFIRMED', 'CANCELLED', 'EXPIRED', 'MERGED') AND updated_at <= $1
      AND EXISTS (SELECT 1 FROM held)
    ORDER BY updated_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM cart_events e USING doomed d WHERE e.tenant = d.tenant AND e.cart_id = d.id
), keys AS (
    DELETE FROM idempotency_keys WHERE (tenant, key) IN (
        SELECT k.tenant, k.key FROM idempotency_keys k
        JOIN doomed d ON k.tenant = d.tenant AND k.response->>'id' = d.id::text
        WHERE k.created_at <= $1 AND k.created_at <= d.updated_at
        FOR UPDATE OF k SKIP LOCKED)
), deliveries AS (
    DELETE FROM callback_deliveries WHERE id IN (
        SELECT c.id FROM callback_deliveries c
        JOIN doomed d ON c.tenant = d.tenant AND c.cart_id = d.id
        FOR UPDATE OF c SKIP LOCKED)
), gone AS (
    DELETE FROM carts c USING doomed d WHERE c.tenant = d.tenant AND c.id = d.id
    RETURNING 1
)
SELECT count(*) FROM gone";

/// Deletes up to $2 callback deliveries delivered or given up at or before
/// $1 (see the index `callback_deliveries_finished_idx`), skipping rows
/// another transaction holds.
pub const PURGE_DELIVERIES: &str = "DELETE FROM callback_deliveries WHERE id IN \
     (SELECT id FROM callback_deliveries \
      WHERE state IN ('delivered', 'failed') AND coalesce(delivered_at, next_attempt_at) <= $1 \
      LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Claims callbacks due at $1, leased until $2, at most $3, oldest due
/// first, looking at the $4 oldest due candidates; at most a budget per
/// endpoint ($5 by default, $6/$7 key/budget pairs, none of $8) and per
/// tenant ($9, $10/$11, none of $12). Ranks in a window, then locks: the
/// state and lease are checked again on the locked row.
pub const CLAIM_CALLBACKS: &str = "
WITH cand AS (
    SELECT id, coalesce(endpoint, '') AS endpoint, tenant, next_attempt_at FROM callback_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
      AND coalesce(endpoint, '') <> ALL($8::text[]) AND tenant <> ALL($12::text[])
    ORDER BY next_attempt_at
    LIMIT $4
), ranked AS (
    SELECT c.id, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.endpoint ORDER BY c.next_attempt_at, c.id) AS en,
           row_number() OVER (PARTITION BY c.tenant ORDER BY c.next_attempt_at, c.id) AS tn,
           coalesce(eb.n, $5) AS e_budget, coalesce(tb.n, $9) AS t_budget
    FROM cand c
    LEFT JOIN unnest($6::text[], $7::int8[]) AS eb(k, n) ON eb.k = c.endpoint
    LEFT JOIN unnest($10::text[], $11::int8[]) AS tb(k, n) ON tb.k = c.tenant
), picked AS (
    SELECT d.id FROM callback_deliveries d JOIN ranked r ON r.id = d.id
    WHERE r.en <= r.e_budget AND r.tn <= r.t_budget
      AND d.state = 'pending' AND (d.lease_until IS NULL OR d.lease_until <= $1)
    ORDER BY r.next_attempt_at
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE callback_deliveries d SET attempts = d.attempts + 1, lease_until = $2
FROM picked WHERE d.id = picked.id
RETURNING d.id, d.tenant, d.url, d.endpoint, d.payload::text, d.attempts";

/// $1 now: pending callbacks, those due, and the oldest due one's due time.
pub const CALLBACK_BACKLOG: &str = "SELECT count(*), count(*) FILTER (WHERE next_attempt_at <= $1), \
     min(next_attempt_at) FILTER (WHERE next_attempt_at <= $1) \
     FROM callback_deliveries WHERE state = 'pending'";

/// Where replicas tell each other "new callbacks are due" (after commit).
pub const CALLBACK_CHANNEL: &str = "cart_callbacks";

/// Attempts, as parallel arrays: $1 ids, $2 states, $3 next attempts
/// (NULL: keep), $4 last statuses, $5 last errors, $6 delivered at.
pub const RECORD_CALLBACKS: &str = "UPDATE callback_deliveries d \
     SET state = u.state, next_attempt_at = coalesce(u.next, d.next_attempt_at), last_status = u.status, \
         last_error = u.error, delivered_at = u.delivered, lease_until = NULL \
     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[], $6::timestamptz[]) \
         AS u(id, state, next, status, error, delivered) \
     WHERE d.id = u.id";

/// $1 tenant, $2 cart.
pub const CALLBACKS_OF: &str = "SELECT id, version, url, state, attempts, last_status, last_error, \
     next_attempt_at, delivered_at FROM callback_deliveries WHERE tenant = $1 AND cart_id = $2 \
     ORDER BY created_at, version";
