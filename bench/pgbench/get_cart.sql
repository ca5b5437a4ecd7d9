-- GetCart as the service runs it: sql::GET_CART (src/store/postgres/sql/),
-- one round trip answering the cart row (kind 0), its current head (kind 1)
-- and its current lines (kind 2), for a cart the replica does not remember
-- ($3 NULL: every cart read whole). Keep it in step with sql/.
-- The cart is picked at random from the seeded carts; bench_ids(n, id) maps
-- 1..:ncarts to their ids (pgbench variables cannot hold a uuid), looked up
-- inside the same statement so it stays one round trip ($2, the id).
\set n random(1, :ncarts)
WITH k AS (SELECT id, 1::int8 AS kept, version, status, updated_at, expires_at, NULL::int8 AS known FROM carts
     WHERE tenant = :tenant AND id = (SELECT id FROM bench_ids WHERE n = :n)),
     fresh AS (SELECT id FROM k WHERE known IS DISTINCT FROM version)
SELECT 0 AS kind, id AS cart_id, kept AS a, version AS b, NULL::int8 AS c,
       NULL::text AS t1, NULL::text AS t2, NULL::text AS t3, status AS t4, updated_at AS ts1,
       expires_at AS ts2, NULL::jsonb AS j, NULL::int4 AS i, NULL::numeric AS n1, NULL::numeric AS n2 FROM k
UNION ALL SELECT 1, h.cart_id, h.valid_from, h.valid_to, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       h.doc, NULL, NULL, NULL FROM fresh k JOIN cart_heads h ON h.tenant = :tenant AND h.cart_id = k.id AND h.valid_to IS NULL
UNION ALL SELECT 2, l.cart_id, l.valid_from, l.valid_to, l.position, l.sku, l.name, NULL, NULL,
       NULL, NULL, l.attributes, l.quantity, l.unit_price, l.list_price FROM fresh k JOIN cart_lines l ON l.tenant = :tenant AND l.cart_id = k.id AND l.valid_to IS NULL;
