//! The statements of the Postgres store. Each change is ONE statement: the
//! cart row, the lines that changed, its event and its idempotency key are
//! written together by a data-modifying CTE, so a change commits in one
//! round trip and writes about as much as it changed. Each read of a cart
//! or an event is one statement too, so it sees one snapshot.

// Reads of carts and events answer one statement's rows of four kinds in
// one column layout (`rows` decodes them), so that a cart and its head and
// lines come from one snapshot:
//   kind 0, a cart as it stands: id, kept (1; 0 = past a page's byte
//           budget), version, status, updated_at, expires_at;
//   kind 1, a state of a head:   cart id, valid_from, valid_to, doc;
//   kind 2, a state of a line:   cart id, valid_from, valid_to, position,
//           sku, name, attributes, quantity, unit_price, list_price;
//   kind 3, an event:            cart id, sequence, version, tenant, type,
//           previous status, status, occurred_at, expires_at, cart (only
//           in events written before heads and lines had tables).
// Columns: kind, cart_id, a int8, b int8, c int8, t1..t4 text, ts1, ts2
// timestamptz, j jsonb, i int4, n1, n2 numeric.

/// Kind-0 rows of the carts `$from` answers (`id`, `kept`, and the columns).
macro_rules! cart_rows {
    ($from:expr) => {
        concat!(
            "SELECT 0 AS kind, id AS cart_id, kept AS a, version AS b, NULL::int8 AS c, \
             NULL::text AS t1, NULL::text AS t2, NULL::text AS t3, status AS t4, updated_at AS ts1, \
             expires_at AS ts2, NULL::jsonb AS j, NULL::int4 AS i, NULL::numeric AS n1, NULL::numeric AS n2 FROM ",
            $from
        )
    };
}

/// Kind-1 and kind-2 rows: the current head and lines of the carts `$ids`
/// (a CTE with `id`) of tenant $1. LATERAL subqueries kept as they are
/// (`OFFSET 0`: not flattened into a join), so that each cart's states are
/// read through the index by (tenant, cart id) whatever the statistics say
/// (measured: on fresh statistics a join scanned the tenant's every line).
macro_rules! current_state_rows {
    ($ids:literal) => {
        concat!(
            " UNION ALL SELECT 1, h.cart_id, h.valid_from, h.valid_to, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             h.doc, NULL, NULL, NULL FROM ",
            $ids,
            " k CROSS JOIN LATERAL (SELECT * FROM cart_heads h \
             WHERE h.tenant = $1 AND h.cart_id = k.id AND h.valid_to IS NULL OFFSET 0) h \
             UNION ALL SELECT 2, l.cart_id, l.valid_from, l.valid_to, l.position, l.sku, l.name, NULL, NULL, \
             NULL, NULL, l.attributes, l.quantity, l.unit_price, l.list_price FROM ",
            $ids,
            " k CROSS JOIN LATERAL (SELECT * FROM cart_lines l \
             WHERE l.tenant = $1 AND l.cart_id = k.id AND l.valid_to IS NULL OFFSET 0) l"
        )
    };
}

/// Carts as they stand: `$which` picks them, `$known` is the version of
/// each the caller knows (NULL: none): a cart still at that version is
/// answered by its row alone, without head and lines (a version's head and
/// lines never change), so that a replica reads only the carts it does
/// not have.
macro_rules! get_carts {
    ($which:literal, $known:literal) => {
        concat!(
            "WITH k AS (SELECT id, 1::int8 AS kept, version, status, updated_at, expires_at, ",
            $known,
            " AS known FROM carts WHERE tenant = $1 AND ",
            $which,
            "), fresh AS (SELECT id FROM k WHERE known IS DISTINCT FROM version) ",
            cart_rows!("k"),
            current_state_rows!("fresh")
        )
    };
}

/// $1 tenant, $2 ids (distinct), $3 their known versions (as $2).
pub const GET_CARTS: &str = get_carts!(
    "id = ANY($2)",
    "($3::int8[])[array_position($2::uuid[], id)]"
);

/// One cart: $1 tenant, $2 id, $3 its known version. Apart from
/// GET_CARTS so that Postgres's generic plan of it is costed as its
/// custom plans are: of an array parameter the generic plan expects ten
/// rows, so Postgres planned GET_CARTS afresh at every call (1 ms of
/// planning for 0.1 ms of execution; GetCart ran at 0.4x).
pub const GET_CART: &str = get_carts!("id = $2", "$3::int8");

/// The rows (kind 0) of carts as they stand, without head and lines: which
/// versions are stored, for a replica that remembers the carts (measured:
/// as cheap as reading one row, where `GET_CART` costs twice as much even
/// when it sends no head or line). $1 tenant, `$which` the carts.
macro_rules! stamp_carts {
    ($which:literal) => {
        cart_rows!(concat!(
            "(SELECT id, 1::int8 AS kept, version, status, updated_at, expires_at FROM carts \
             WHERE tenant = $1 AND ",
            $which,
            ") k"
        ))
    };
}

/// $2 ids.
pub const STAMP_CARTS: &str = stamp_carts!("id = ANY($2)");

/// $2 id.
pub const STAMP_CART: &str = stamp_carts!("id = $2");

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

/// Inserts new line states, the rows of `$source` (sku, position, name,
/// quantity, unit price, list price, attributes), for the cart `t`
/// answers (none when the write does not go ahead); `$position` is the
/// place of each (a line that stays keeps its own).
macro_rules! new_lines {
    ($source:expr, $join:literal, $position:literal) => {
        concat!(
            "INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, \
             unit_price, list_price, attributes) \
             SELECT $1, t.id, n.sku, t.version, ",
            $position,
            ", n.name, n.quantity, n.unit_price, n.list_price, n.attributes FROM t CROSS JOIN ",
            $source,
            " AS n(sku, position, name, quantity, unit_price, list_price, attributes) ",
            $join
        )
    };
}

/// Inserts a cart: its row, head, lines, CREATED event and key. Answers 0
/// when the reference is taken (then nothing is written). $1 tenant, $2 id,
/// $3 status, $4 customer, $5 reference (NULL: none), $6 now, $7 expires,
/// $8 fingerprint, $9 head, $10 size, $11 key (NULL: none), $12 key
/// fingerprint, $13..$19 lines.
pub const INSERT_CART: &str = concat!(
    "
WITH t AS (
    INSERT INTO carts (tenant, id, version, status, customer_id, reference, created_at, updated_at,
                       expires_at, expires_bucket, create_fingerprint, size)
    VALUES ($1, $2, 1, $3, $4, $5, $6, $6, $7, date_trunc('minute', $7::timestamptz), $8, $10)
    ON CONFLICT DO NOTHING
    RETURNING id, version
), head AS (
    INSERT INTO cart_heads (tenant, cart_id, valid_from, doc) SELECT $1, id, version, $9 FROM t
), lines AS (",
    new_lines!(
        "unnest($13::text[], $14::int8[], $15::text[], $16::int4[], $17::numeric[], $18::numeric[], $19::jsonb[])",
        "",
        "n.position"
    ),
    "
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
    SELECT $1, id, 1, 'CREATED', $3, NULL, $6, $7 FROM t
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, cart_id, version, created_at)
    SELECT $1, $11, $12, id, 1, $6 FROM t WHERE $11::text IS NOT NULL
)
SELECT count(*) FROM t"
);

/// Writes the next version of a cart: its row; its head when `$8` is not
/// NULL (the head changed); the lines that changed (`$ended` ends the
/// current states of SKUs, `$lines` adds new states); its event, key and
/// callback. Answers 0 when the stored version is no longer $3 - 1 (a
/// concurrent change won): then nothing is written. Within the minute of
/// its expiry bucket, a change that leaves the head alone updates the cart
/// row in place (HOT). $1 tenant, $2 id, $3 new version, $4 status, $5
/// customer, $6 now, $7 expires, $8 head or NULL, $9 size, $10 event type,
/// $11 previous status, $12 key (NULL: none), $13 key fingerprint, $14/$15
/// the cart and version the key answers, $16 callback id, $17 callback URL
/// (NULL: no callback due), $18 callback payload, $19 ended SKUs, $20..$26
/// new lines, $27 when the cart became final (NULL while it is not).
/// The states it ends are found by `$2`, not by a join with `t`: joined,
/// a planner without statistics (a fresh database before its first
/// ANALYZE) scanned every current line of the tenant per change.
macro_rules! write_cart {
    ($ended:literal, $lines:expr) => {
        concat!(
            "
WITH t AS (
    UPDATE carts SET version = $3, status = $4, customer_id = $5, updated_at = $6, expires_at = $7,
                     expires_bucket = date_trunc('minute', $7::timestamptz), size = $9, final_at = $27
    WHERE tenant = $1 AND id = $2 AND version = $3::bigint - 1
    RETURNING id, version
), head_ended AS (
    UPDATE cart_heads h SET valid_to = $3
    WHERE $8::jsonb IS NOT NULL AND h.tenant = $1 AND h.cart_id = $2 AND h.valid_to IS NULL
      AND EXISTS (SELECT FROM t)
), head AS (
    INSERT INTO cart_heads (tenant, cart_id, valid_from, doc)
    SELECT $1, id, version, $8 FROM t WHERE $8::jsonb IS NOT NULL
), ended AS (
    UPDATE cart_lines l SET valid_to = $3
    WHERE l.tenant = $1 AND l.cart_id = $2 AND l.valid_to IS NULL AND l.sku ",
            $ended,
            "
      AND EXISTS (SELECT FROM t)
    RETURNING l.sku, l.position
), lines AS (",
            new_lines!(
                $lines,
                "LEFT JOIN ended e ON e.sku = n.sku",
                "coalesce(e.position, n.position)"
            ),
            "
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
    SELECT $1, id, version, $10, $4, $11, $6, $7 FROM t
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, cart_id, version, created_at)
    SELECT $1, $12, $13, $14, $15, $6 FROM t WHERE $12::text IS NOT NULL
), cb AS (
    INSERT INTO callback_deliveries (id, tenant, cart_id, version, url, payload, next_attempt_at, created_at)
    SELECT $16, $1, id, version, $17, $18, $6, $6 FROM t WHERE $17::text IS NOT NULL
)
SELECT count(*) FROM t"
        )
    };
}

/// A change of any number of lines: $19 and $20..$26 are arrays.
pub const WRITE_CART: &str = write_cart!(
    "= ANY($19::text[])",
    "unnest($20::text[], $21::int8[], $22::text[], $23::int4[], $24::numeric[], $25::numeric[], $26::jsonb[])"
);

/// A change that writes at most one line state and ends at most one
/// (AddItems of one SKU, status changes: most changes): $19 and $20..$26
/// are single values (NULL: none). Apart from WRITE_CART so that Postgres keeps a generic
/// plan of it: of an array parameter a generic plan expects ten elements,
/// so once `cart_lines` is large (300-line carts, or any history) it
/// costed WRITE_CART's generic plan at 5x its custom plans and planned it
/// afresh at every call (measured: a third of Postgres's CPU per change).
pub const WRITE_CART_ONE_LINE: &str = write_cart!(
    "= $19::text",
    "(SELECT * FROM (VALUES ($20::text, $21::int8, $22::text, $23::int4, $24::numeric, $25::numeric, \
     $26::jsonb)) v WHERE $20::text IS NOT NULL)"
);

/// A ListCarts page: `$page` picks up to `$4` carts (`page_columns!`)
/// older in list order than the cursor ($2 created_at, $3 id), through the
/// index of its filter. Carts are answered whole while the page's sizes add
/// up to less than `$5` bytes; past that a cart comes without head and
/// lines (kept = 0), which ends the page there, so that one page of large
/// carts never brings more than about `$5` bytes into the server. $1 tenant.
macro_rules! list_carts {
    ($page:expr) => {
        concat!(
            "WITH page AS (",
            $page,
            "), k AS (SELECT id, CASE WHEN sum(size) OVER w - size < $5 THEN 1::int8 ELSE 0::int8 END AS kept, version, status, \
             updated_at, expires_at FROM page \
             WINDOW w AS (ORDER BY created_at DESC, id DESC)), \
             kept AS (SELECT id FROM k WHERE kept = 1) ",
            cart_rows!("k"),
            current_state_rows!("kept")
        )
    };
}

/// What a page reads of each cart: all its row answers (a join back to
/// `carts` would be planned for a tenth of the table under a generic plan,
/// which cannot know `LIMIT $4`: measured, a hash join over 1,000,000 carts,
/// 285 ms a page).
macro_rules! page_columns {
    () => {
        "SELECT id, created_at, size, version, status, updated_at, expires_at FROM carts "
    };
}

/// Every cart of the tenant (index carts_tenant_created_idx).
pub const LIST_CARTS: &str = list_carts!(concat!(
    page_columns!(),
    "WHERE tenant = $1 AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
));

/// $6 customer (not empty; index carts_tenant_customer_idx).
pub const LIST_CUSTOMER_CARTS: &str = list_carts!(concat!(
    page_columns!(),
    "WHERE tenant = $1 AND customer_id = $6 AND customer_id <> '' AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
));

/// $6 statuses (not empty): one range of carts_tenant_status_created_idx
/// per status, merged, so the cost follows the page, not the tenant.
pub const LIST_STATUS_CARTS: &str = list_carts!(concat!(
    "SELECT p.* FROM unnest($6::text[]) AS s(status) CROSS JOIN LATERAL (",
    page_columns!(),
    "WHERE tenant = $1 AND status = s.status AND (created_at, id) < ($2, $3) \
       ORDER BY created_at DESC, id DESC LIMIT $4) p \
     ORDER BY created_at DESC, id DESC LIMIT $4"
));

/// $6 customer, $7 statuses (neither empty): the customer's carts (a
/// customer has few), filtered.
pub const LIST_CUSTOMER_STATUS_CARTS: &str = list_carts!(concat!(
    page_columns!(),
    "WHERE tenant = $1 AND customer_id = $6 AND customer_id <> '' AND status = ANY($7::text[]) \
       AND (created_at, id) < ($2, $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
));

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

/// Carts past their expiry, locked, skipping those another sweeper holds
/// (GET_CARTS then reads them). $1 now, $2 limit.
pub const DUE_CARTS: &str = "SELECT tenant, id FROM carts WHERE expires_bucket <= $1 AND expires_at <= $1 \
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
/// The memory store's `Events::purge` follows the same rule. Young
/// events are past the stop: their cart and first event are not looked up
/// (with nothing old enough, a pass read 20,000 buffers for 2,000 events).
pub const PURGE_EVENTS: &str = "
WITH scan AS (
    SELECT e.sequence, e.tenant, e.cart_id, e.version, e.occurred_at > $3 AS young,
           CASE WHEN e.occurred_at <= $3 THEN
               (SELECT c.version FROM carts c WHERE c.tenant = e.tenant AND c.id = e.cart_id)
               IS DISTINCT FROM e.version END AS stale,
           CASE WHEN e.occurred_at <= $3 THEN
               (SELECT o.sequence FROM cart_events o WHERE o.tenant = e.tenant AND o.cart_id = e.cart_id
                ORDER BY o.version LIMIT 1) <= $1 END AS orphaned
    FROM cart_events e
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
    RETURNING d.tenant, d.cart_id, d.version
), orphans AS (
    DELETE FROM cart_events d USING passed p
    WHERE p.orphaned AND d.tenant = p.tenant AND d.cart_id = p.cart_id AND d.version < p.version
      AND d.sequence <= $1
    RETURNING d.tenant, d.cart_id, d.version
), gone AS (
    -- A cart's events go oldest first: once its versions up to `upto` - 1
    -- have no event, the states only they used (ended by `upto`) go too.
    -- Writers never touch an ended state, so nobody waits for these.
    SELECT tenant, cart_id, max(version) + 1 AS upto
    FROM (SELECT * FROM dropped UNION ALL SELECT * FROM orphans) x GROUP BY tenant, cart_id
), heads AS (
    DELETE FROM cart_heads h USING gone g
    WHERE h.tenant = g.tenant AND h.cart_id = g.cart_id AND h.valid_to <= g.upto
), lines AS (
    DELETE FROM cart_lines l USING gone g
    WHERE l.tenant = g.tenant AND l.cart_id = g.cart_id AND l.valid_to <= g.upto
), moved AS (
    UPDATE cart_events_compaction SET compacted_through = p.last
    FROM (SELECT max(sequence) AS last FROM passed) p
    WHERE p.last IS NOT NULL
)
SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM orphans)";

/// One batch of cart retention: up to $2 carts that became final
/// (`final_at`, set once by the change that made them final) at or before
/// $1, with their heads, lines, events, callback deliveries and the
/// idempotency keys that answer them. Shares the compaction row (see
/// PURGE_EVENTS); skips carts, keys and deliveries another transaction
/// holds. Answers the carts deleted.
pub const PURGE_CARTS: &str = "
WITH held AS (
    SELECT one_row FROM cart_events_compaction FOR SHARE SKIP LOCKED
), doomed AS (
    SELECT tenant, id, updated_at FROM carts
    WHERE final_at <= $1 AND EXISTS (SELECT 1 FROM held)
    ORDER BY final_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM cart_events e USING doomed d WHERE e.tenant = d.tenant AND e.cart_id = d.id
), keys AS (
    DELETE FROM idempotency_keys WHERE (tenant, key) IN (
        SELECT k.tenant, k.key FROM idempotency_keys k
        JOIN doomed d ON k.tenant = d.tenant AND k.cart_id = d.id
        FOR UPDATE OF k SKIP LOCKED)
), heads AS (
    DELETE FROM cart_heads h USING doomed d WHERE h.tenant = d.tenant AND h.cart_id = d.id
), lines AS (
    DELETE FROM cart_lines l USING doomed d WHERE l.tenant = d.tenant AND l.cart_id = d.id
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
