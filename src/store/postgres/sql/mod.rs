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

mod carts;
mod events;
mod upkeep;

pub use carts::*;
pub use events::*;
pub use upkeep::*;
