-- AddItems of one unit of an existing line, the write as the service ran it
-- on 3 December (versioned line states; WRITE_CART's array form), after a
-- small read for the version. Compare with inplace_lines.sql.
\set n random(1, :ncarts)
\set s random(0, 2)
SELECT b.id AS cart_id, c.version + 1 AS v, 'SKU-' || lpad(:s::text, 4, '0') AS sku, l.quantity + 1 AS qty FROM bench_ids b JOIN carts c ON c.tenant = 't' AND c.id = b.id JOIN cart_lines l ON l.tenant='t' AND l.cart_id = b.id AND l.sku = 'SKU-' || lpad(:s::text, 4, '0') AND l.valid_to IS NULL WHERE b.n = :n \gset
WITH t AS (
    UPDATE carts SET version = :v, status = 'ACTIVE', customer_id = '', updated_at = now(), expires_at = now() + interval '30 days',
                     expires_bucket = date_trunc('minute', (now() + interval '30 days')::timestamptz), size = 300, final_at = NULL
    WHERE tenant = 't' AND id = :cart_id::uuid AND version = :v::bigint - 1
    RETURNING id, version
), head_ended AS (
    UPDATE cart_heads h SET valid_to = :v
    WHERE NULL::jsonb IS NOT NULL AND h.tenant = 't' AND h.cart_id = :cart_id::uuid AND h.valid_to IS NULL AND EXISTS (SELECT FROM t)
), ended AS (
    UPDATE cart_lines l SET valid_to = :v
    WHERE l.tenant = 't' AND l.cart_id = :cart_id::uuid AND l.valid_to IS NULL AND l.sku = ANY(ARRAY[:sku::text])
      AND EXISTS (SELECT FROM t)
    RETURNING l.sku, l.position
), lines AS (
    INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, unit_price, list_price, attributes)
    SELECT 't', t.id, n.sku, t.version, coalesce(e.position, n.position), n.name, n.quantity, n.unit_price, n.list_price, n.attributes
    FROM t CROSS JOIN unnest(ARRAY[:sku::text], ARRAY[0::int8], ARRAY['Bench item'], ARRAY[:qty::int4], ARRAY[4.99::numeric], ARRAY[4.99::numeric], ARRAY[NULL::jsonb])
      AS n(sku, position, name, quantity, unit_price, list_price, attributes) LEFT JOIN ended e ON e.sku = n.sku
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
    SELECT 't', id, version, 'ITEMS_CHANGED', 'ACTIVE', 'ACTIVE', now(), now() + interval '30 days' FROM t
)
SELECT count(*) FROM t;
