-- AddItems of one line as the service runs it without a request_id
-- (src/store/postgres/sql/; keep it in step): sql::GET_CARTS, then
-- sql::WRITE_CART_ONE_LINE_PLAIN, two round trips in autocommit: the path of a cart the
-- replica does not remember (a remembered one is the write alone).
--
-- The read is GET_CARTS as the service sends it (every row still comes
-- back), with columns added that Postgres computes from those rows where
-- the service computes them in Rust (conservative for pgbench): the next
-- version, the customer (from the head), whether the SKU is in the cart
-- and its quantity, and an approximate encoded size. The SKU, its name and
-- price are cart-bench's (`SKU-nnnn`, "Bench item n", 1+n%50 . n*37%100).
-- The write is WRITE_CART_ONE_LINE_PLAIN (no head, key or callback parts)
-- with the parameters of a one-line add: not final ($27 NULL); the SKU's
-- current line ended ($19) when the cart has it, and its new state
-- (quantity + 1, or 1 at a new place) inserted. $6 now and $7 expires are now()
-- expressions (the service sends the database's time, read at connect).
\set n random(1, :ncarts)
\set s random(0, :nskus - 1)
WITH r AS (
    WITH k AS (SELECT id, 1::int8 AS kept, version, status, updated_at, expires_at FROM carts
         WHERE tenant = :tenant AND id = ANY(ARRAY[(SELECT id FROM bench_ids WHERE n = :n)]))
    SELECT 0 AS kind, id AS cart_id, kept AS a, version AS b, NULL::int8 AS c,
           NULL::text AS t1, NULL::text AS t2, NULL::text AS t3, status AS t4, updated_at AS ts1,
           expires_at AS ts2, NULL::jsonb AS j, NULL::int4 AS i, NULL::numeric AS n1, NULL::numeric AS n2 FROM k
    UNION ALL SELECT 1, h.cart_id, h.valid_from, h.valid_to, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           h.doc, NULL, NULL, NULL FROM k k JOIN cart_heads h ON h.tenant = :tenant AND h.cart_id = k.id AND h.valid_to IS NULL
    UNION ALL SELECT 2, l.cart_id, l.valid_from, l.valid_to, l.position, l.sku, l.name, NULL, NULL,
           NULL, NULL, l.attributes, l.quantity, l.unit_price, l.list_price FROM k k JOIN cart_lines l ON l.tenant = :tenant AND l.cart_id = k.id AND l.valid_to IS NULL
), p AS (
    SELECT 'SKU-' || lpad(:s::int::text, 4, '0') AS sku
)
SELECT r.*, p.sku,
       max(r.b) FILTER (WHERE r.kind = 0) OVER () + 1 AS v,
       max(r.j ->> 'customer_id') FILTER (WHERE r.kind = 1) OVER () AS cust,
       CASE WHEN count(*) FILTER (WHERE r.kind = 2 AND r.t1 = p.sku) OVER () > 0
            THEN p.sku ELSE '' END AS ended,
       coalesce(max(r.i) FILTER (WHERE r.kind = 2 AND r.t1 = p.sku) OVER (), 0) + 1 AS qty,
       300 + 80 * count(*) FILTER (WHERE r.kind = 2) OVER () AS size
FROM r CROSS JOIN p \aset
WITH t AS (
    UPDATE carts SET version = :v, status = 'ACTIVE', customer_id = :cust, updated_at = now(),
                     expires_at = now() + interval '30 days',
                     expires_bucket = date_trunc('minute', (now() + interval '30 days')::timestamptz), size = :size,
                     final_at = NULL::timestamptz
    WHERE tenant = :tenant AND id = :cart_id AND version = :v::bigint - 1
    RETURNING id, version
), ended AS (
    UPDATE cart_lines l SET valid_to = :v
    WHERE l.tenant = :tenant AND l.cart_id = :cart_id AND l.valid_to IS NULL AND l.sku = nullif(:ended, '')::text
      AND EXISTS (SELECT FROM t)
    RETURNING l.sku, l.position
), lines AS (
    INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity,
                            unit_price, list_price, attributes)
    SELECT :tenant, t.id, n.sku, t.version, coalesce(e.position, n.position), n.name, n.quantity,
           n.unit_price, n.list_price, n.attributes
    FROM t CROSS JOIN (SELECT * FROM (VALUES (:sku::text, :v::int8 * 65536, ('Bench item ' || :s::int)::text, :qty::int4,
                             ((1 + :s::int % 50) || '.' || lpad((:s::int * 37 % 100)::text, 2, '0'))::numeric,
                             ((1 + :s::int % 50) || '.' || lpad((:s::int * 37 % 100)::text, 2, '0'))::numeric,
                             NULL::jsonb)) v WHERE :sku::text IS NOT NULL)
         AS n(sku, position, name, quantity, unit_price, list_price, attributes)
    LEFT JOIN ended e ON e.sku = n.sku
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
    SELECT :tenant, id, version, 'ITEMS_CHANGED', 'ACTIVE', 'ACTIVE', now(), now() + interval '30 days' FROM t
)
SELECT count(*) FROM t;
