//! Reading, writing and listing carts.

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
/// current states of SKUs, `$lines` adds new states); its event; then
/// `$rest`, the parts only some changes write (`write_cart_rest!`). Answers
/// 0 when the stored version is no longer $3 - 1 (a concurrent change won):
/// then nothing is written. Within the minute of its expiry bucket, a
/// change that leaves the head alone updates the cart row in place (HOT).
/// $1 tenant, $2 id, $3 new version, $4 status, $5 customer, $6 now, $7
/// expires, $8 head or NULL, $9 size, $10 event type, $11 previous status,
/// $12 key (NULL: none), $13 key fingerprint, $14/$15 the cart and version
/// the key answers, $16 callback id, $17 callback URL (NULL: no callback
/// due), $18 callback payload, $19 ended SKUs, $20..$26 new lines, $27 when
/// the cart became final (NULL while it is not).
/// The states it ends are found by `$2`, not by a join with `t`: joined,
/// a planner without statistics (a fresh database before its first
/// ANALYZE) scanned every current line of the tenant per change.
macro_rules! write_cart {
    ($ended:literal, $lines:expr, $rest:expr) => {
        concat!(
            "
WITH t AS (
    UPDATE carts SET version = $3, status = $4, customer_id = $5, updated_at = $6, expires_at = $7,
                     expires_bucket = date_trunc('minute', $7::timestamptz), size = $9, final_at = $27
    WHERE tenant = $1 AND id = $2 AND version = $3::bigint - 1
    RETURNING id, version
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
    SELECT $1, id, version, $10, $4, $11, $6, $7 FROM t",
            $rest,
            "
)
SELECT count(*) FROM t"
        )
    };
}

/// What only some changes write: a new head ($8), an idempotency key
/// ($12), a callback ($17). Each part writes nothing when its parameter is
/// NULL, but Postgres still opens (and locks) its tables and indexes at
/// every call (measured: 0.81x Postgres CPU per AddItems without them), so
/// the changes that write none of them use the statements without
/// (`WRITE_*_PLAIN`), prepared with the parameter types Postgres infers
/// for the full ones. (A statement with the key part alone, for changes
/// with a `request_id`, measured within noise of the full one.)
macro_rules! write_cart_rest {
    () => {
        "
), head_ended AS (
    UPDATE cart_heads h SET valid_to = $3
    WHERE $8::jsonb IS NOT NULL AND h.tenant = $1 AND h.cart_id = $2 AND h.valid_to IS NULL
      AND EXISTS (SELECT FROM t)
), head AS (
    INSERT INTO cart_heads (tenant, cart_id, valid_from, doc)
    SELECT $1, id, version, $8 FROM t WHERE $8::jsonb IS NOT NULL
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, cart_id, version, created_at)
    SELECT $1, $12, $13, $14, $15, $6 FROM t WHERE $12::text IS NOT NULL
), cb AS (
    INSERT INTO callback_deliveries (id, tenant, cart_id, version, url, payload, next_attempt_at, created_at)
    SELECT $16, $1, id, version, $17, $18, $6, $6 FROM t WHERE $17::text IS NOT NULL"
    };
}

/// A change of any number of lines: $19 and $20..$26 are arrays.
macro_rules! write_cart_lines {
    ($rest:expr) => {
        write_cart!(
            "= ANY($19::text[])",
            "unnest($20::text[], $21::int8[], $22::text[], $23::int4[], $24::numeric[], $25::numeric[], $26::jsonb[])",
            $rest
        )
    };
}

/// A change that writes at most one line state and ends at most one
/// (AddItems of one SKU, status changes: most changes): $19 and $20..$26
/// are single values (NULL: none). Apart from the array form so that
/// Postgres keeps a generic plan of it: of an array parameter a generic
/// plan expects ten elements, so once `cart_lines` is large (300-line
/// carts, or any history) it costed the array form's generic plan at 5x
/// its custom plans and planned it afresh at every call (measured: a third
/// of Postgres's CPU per change).
macro_rules! write_cart_one_line {
    ($rest:expr) => {
        write_cart!(
            "= $19::text",
            "(SELECT * FROM (VALUES ($20::text, $21::int8, $22::text, $23::int4, $24::numeric, $25::numeric, \
             $26::jsonb)) v WHERE $20::text IS NOT NULL)",
            $rest
        )
    };
}

pub const WRITE_CART: &str = write_cart_lines!(write_cart_rest!());
pub const WRITE_CART_ONE_LINE: &str = write_cart_one_line!(write_cart_rest!());
/// As WRITE_CART, for a change with no new head, key or callback.
pub const WRITE_CART_PLAIN: &str = write_cart_lines!("");
/// As WRITE_CART_ONE_LINE, for a change with no new head, key or callback.
pub const WRITE_CART_ONE_LINE_PLAIN: &str = write_cart_one_line!("");

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
