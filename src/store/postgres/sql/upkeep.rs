//! Expiry, retention and the callback outbox.

/// Carts past their expiry, locked, skipping those another sweeper holds
/// (GET_CARTS then reads them). $1 now, $2 limit.
pub const DUE_CARTS: &str = "SELECT tenant, id FROM carts WHERE expires_bucket <= $1 AND expires_at <= $1 \
     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED";

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
