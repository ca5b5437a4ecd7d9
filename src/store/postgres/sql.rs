//! The statements of the Postgres store. Each change is ONE statement: the
//! cart row, the lines that changed, its event and its idempotency key are
//! written together by a data-modifying CTE, so a change commits in one
//! round trip and writes about as much as it changed. Each read of a cart
//! or an event is one statement too, so it sees one snapshot.

/// The columns of a line in the queries that read carts or events: the
/// suffix `rows::line_at` reads.
macro_rules! line_columns {
    () => {
        "l.sku, l.valid_from, l.valid_to, l.position, l.name, l.quantity, l.unit_price, \
         l.list_price, l.attributes"
    };
}

/// The same columns, empty, for the rows that are not lines.
macro_rules! no_line {
    () => {
        "NULL::text, NULL::int8, NULL::int8, NULL::int8, NULL::text, NULL::int4, NULL::numeric, \
         NULL::numeric, NULL::jsonb"
    };
}

/// Carts as they stand, in one statement (one snapshot): a row per cart
/// (id, head), then a row per current line (cart id, NULL, line), in no
/// particular order. $1 tenant, $2 ids.
pub const GET_CARTS: &str = concat!(
    "SELECT id, doc, ",
    no_line!(),
    " FROM carts WHERE tenant = $1 AND id = ANY($2) \
     UNION ALL SELECT l.cart_id, NULL, ",
    line_columns!(),
    " FROM cart_lines l WHERE l.tenant = $1 AND l.cart_id = ANY($2) AND l.valid_to IS NULL"
);

/// Locks carts until the transaction ends, in id order so that two merges
/// cannot deadlock; GET_CARTS then reads them (its snapshot is taken after
/// the locks are held). $1 tenant, $2 ids.
pub const LOCK_CARTS: &str =
    "SELECT id FROM carts WHERE tenant = $1 AND id = ANY($2) ORDER BY id FOR UPDATE";

/// $1 tenant, $2 key (at any age: the use case judges the window).
pub const GET_KEY: &str = "SELECT fingerprint, cart_id, version, created_at FROM idempotency_keys \
     WHERE tenant = $1 AND key = $2";

/// $1 tenant, $2 key, $3 cutoff: forgets a key older than the window so it can be used again.
pub const FORGET_KEY: &str =
    "DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2 AND created_at <= $3";

/// $1 tenant, $2 reference: the cart that holds it and its create fingerprint.
pub const GET_BY_REFERENCE: &str =
    "SELECT id, create_fingerprint FROM carts WHERE tenant = $1 AND reference = $2";

/// The new lines of a change as parallel arrays, joined to `$t` (a CTE
/// that answers the cart's id when the write goes ahead): sku, position
/// (kept from the ended line of the same SKU when there is one), name,
/// quantity, unit price, list price, attributes.
macro_rules! new_lines {
    ($from:literal, $position:literal) => {
        concat!(
            "INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, \
             unit_price, list_price, attributes) \
             SELECT $1, t.id, n.sku, t.version, ",
            $position,
            ", n.name, n.quantity, n.unit_price, n.list_price, n.attributes FROM ",
            $from
        )
    };
}

/// Inserts a cart with its lines, its CREATED event and key. Answers 0 when
/// the reference is taken. $1 tenant, $2 id, $3 status, $4 customer, $5
/// reference (NULL: none), $6 now, $7 expires, $8 fingerprint, $9 head,
/// $10 size, $11 key (NULL: none), $12 key fingerprint, $13..$19 lines
/// (sku, position, name, quantity, unit price, list price, attributes).
pub const INSERT_CART: &str = concat!(
    "
WITH t AS (
    INSERT INTO carts (tenant, id, version, status, customer_id, reference, created_at, updated_at,
                       expires_at, create_fingerprint, doc, size)
    VALUES ($1, $2, 1, $3, $4, $5, $6, $6, $7, $8, $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING id, version
), lines AS (",
    new_lines!(
        "t, unnest($13::text[], $14::int8[], $15::text[], $16::int4[], $17::numeric[], \
         $18::numeric[], $19::jsonb[]) AS n(sku, position, name, quantity, unit_price, list_price, attributes)",
        "n.position"
    ),
    "
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart)
    SELECT $1, id, 1, 'CREATED', $3, NULL, $6, $9 FROM t
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, cart_id, version, created_at)
    SELECT $1, $11, $12, id, 1, $6 FROM t WHERE $11::text IS NOT NULL
)
SELECT count(*) FROM t"
);

/// Writes the next version of a cart: its head, the lines that changed
/// (`$17` ends the current rows of those SKUs, `$18..$24` adds the new
/// states), its event, key and callback. Answers 0 when the stored version
/// is no longer $3 - 1 (a concurrent change won): then nothing is written.
/// $1 tenant, $2 id, $3 new version, $4 status, $5 customer, $6 now, $7
/// expires, $8 head, $9 size, $10 event type, $11 previous status, $12 key
/// (NULL: none), $13 key fingerprint, $14/$15 the cart and version the key
/// answers, $16 callback id, $17 callback URL (NULL: no callback due), $18
/// callback payload, $19 ended SKUs, $20..$26 new lines.
pub const WRITE_CART: &str = concat!(
    "
WITH t AS (
    UPDATE carts SET version = $3, status = $4, customer_id = $5, updated_at = $6, expires_at = $7,
                     doc = $8, size = $9
    WHERE tenant = $1 AND id = $2 AND version = $3::bigint - 1
    RETURNING id, version
), ended AS (
    UPDATE cart_lines l SET valid_to = t.version FROM t
    WHERE l.tenant = $1 AND l.cart_id = t.id AND l.valid_to IS NULL AND l.sku = ANY($19::text[])
    RETURNING l.sku, l.position
), lines AS (",
    new_lines!(
        "t CROSS JOIN unnest($20::text[], $21::int8[], $22::text[], $23::int4[], $24::numeric[], \
         $25::numeric[], $26::jsonb[]) AS n(sku, position, name, quantity, unit_price, list_price, attributes) \
         LEFT JOIN ended e ON e.sku = n.sku",
        "coalesce(e.position, n.position)"
    ),
    "
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart)
    SELECT $1, id, version, $10, $4, $11, $6, $8 FROM t
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, cart_id, version, created_at)
    SELECT $1, $12, $13, $14, $15, $6 FROM t WHERE $12::text IS NOT NULL
), cb AS (
    INSERT INTO callback_deliveries (id, tenant, cart_id, version, url, payload, next_attempt_at, created_at)
    SELECT $16, $1, id, version, $17, $18, $6, $6 FROM t WHERE $17::text IS NOT NULL
)
SELECT count(*) FROM t"
);

/// A ListCarts page: `$page` picks up to `$4` carts (id, created_at, doc,
/// size) older in list order than the cursor ($2 created_at, $3 id), served
/// by the index of its filter. Each is answered with its head and current
/// lines while the page's sizes add up to less than `$5` bytes; past that a
/// cart is answered without its head (NULL), which ends the page there, so
/// that one page of large carts never brings more than about `$5` bytes
/// into the server. $1 tenant.
macro_rules! list_carts {
    ($page:literal) => {
        concat!(
            "WITH page AS (",
            $page,
            "), cut AS (SELECT id, doc, sum(size) OVER (ORDER BY created_at DESC, id DESC) - size < $5 AS keep \
             FROM page) \
             SELECT id, CASE WHEN keep THEN doc END, ",
            no_line!(),
            " FROM cut UNION ALL SELECT l.cart_id, NULL, ",
            line_columns!(),
            " FROM cut JOIN cart_lines l ON l.tenant = $1 AND l.cart_id = cut.id AND l.valid_to IS NULL \
             WHERE cut.keep"
        )
    };
}

/// Every cart of the tenant (index carts_tenant_created_idx).
pub const LIST_CARTS: &str = list_carts!(
    "SELECT id, created_at, doc, size FROM carts WHERE tenant = $1 AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// $6 customer (not empty; index carts_tenant_customer_idx).
pub const LIST_CUSTOMER_CARTS: &str = list_carts!(
    "SELECT id, created_at, doc, size FROM carts \
     WHERE tenant = $1 AND customer_id = $6 AND customer_id <> '' AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// $6 statuses (not empty): one range of carts_tenant_status_created_idx
/// per status, merged, so the cost follows the page, not the tenant.
pub const LIST_STATUS_CARTS: &str = list_carts!(
    "SELECT p.* FROM unnest($6::text[]) AS s(status) CROSS JOIN LATERAL ( \
       SELECT id, created_at, doc, size FROM carts \
       WHERE tenant = $1 AND status = s.status AND (created_at, id) < ($2, $3) \
       ORDER BY created_at DESC, id DESC LIMIT $4) p \
     ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// $6 customer, $7 statuses (neither empty): the customer's carts (a
/// customer has few), filtered.
pub const LIST_CUSTOMER_STATUS_CARTS: &str = list_carts!(
    "SELECT id, created_at, doc, size FROM carts \
     WHERE tenant = $1 AND customer_id = $6 AND customer_id <> '' AND status = ANY($7::text[]) \
       AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// An event query: `$ev` picks events (its columns as below); each comes
/// with the lines of its cart at its version, read in the same snapshot: a
/// row per event (sequence, tenant, type, previous status, occurred at,
/// head, cart id), then a row per line state any of them needs (NULLs,
/// cart id, line), in no particular order.
macro_rules! events {
    ($ev:literal) => {
        concat!(
            "WITH ev AS (SELECT sequence, tenant, cart_id, version, type, previous_status, occurred_at, cart \
             FROM cart_events ",
            $ev,
            "), span AS (SELECT tenant, cart_id, min(version) AS lo, max(version) AS hi FROM ev \
             GROUP BY tenant, cart_id) \
             SELECT sequence, tenant, type, previous_status, occurred_at, cart, cart_id, ",
            no_line!(),
            " FROM ev UNION ALL \
             SELECT NULL, NULL, NULL, NULL, NULL, NULL, l.cart_id, ",
            line_columns!(),
            " FROM span JOIN cart_lines l ON l.tenant = span.tenant AND l.cart_id = span.cart_id \
             AND l.valid_from <= span.hi AND (l.valid_to IS NULL OR l.valid_to > span.lo)"
        )
    };
}

/// $1 tenant, $2 after sequence, $3 head, $4 limit.
pub const TENANT_EVENTS: &str =
    events!("WHERE tenant = $1 AND sequence > $2 AND sequence <= $3 ORDER BY sequence LIMIT $4");

/// $1 tenant, $2 cart, $3 after version, $4 limit.
pub const CART_EVENTS: &str =
    events!("WHERE tenant = $1 AND cart_id = $2 AND version > $3 ORDER BY version LIMIT $4");

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

/// The transaction ids running now in this database (other sessions).
pub const RUNNING_XIDS: &str = "SELECT coalesce(array_agg(backend_xid::text::bigint), '{}') \
     FROM pg_stat_activity \
     WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()";

/// Carts past their expiry, locked, skipping those another sweeper holds
/// (GET_CARTS then reads them). $1 now, $2 limit.
pub const DUE_CARTS: &str = "SELECT tenant, id FROM carts WHERE expires_at <= $1 \
     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED";

pub const CHANNEL: &str = "cart_events";

/// Deletes up to $2 idempotency keys created at or before $1.
pub const FORGET_OLD_KEYS: &str = "DELETE FROM idempotency_keys WHERE (tenant, key) IN \
     (SELECT tenant, key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)";

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
