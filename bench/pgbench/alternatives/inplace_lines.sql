-- The alternative: lines updated in place (HOT: no indexed column changes)
-- and the event keeping the before-states of the lines it changed, from
-- which replays would be rebuilt backwards from the current cart.
\set n random(1, :ncarts)
\set s random(0, 2)
SELECT b.id AS cart_id, c.version + 1 AS v, 'SKU-' || lpad(:s::text, 4, '0') AS sku, l.quantity + 1 AS qty FROM bench_ids b JOIN carts c ON c.tenant = 't' AND c.id = b.id JOIN lines2 l ON l.tenant='t' AND l.cart_id = b.id AND l.sku = 'SKU-' || lpad(:s::text, 4, '0') WHERE b.n = :n \gset
WITH t AS (
    UPDATE carts SET version = :v, status = 'ACTIVE', customer_id = '', updated_at = now(), expires_at = now() + interval '30 days',
                     expires_bucket = date_trunc('minute', (now() + interval '30 days')::timestamptz), size = 300, final_at = NULL
    WHERE tenant = 't' AND id = :cart_id::uuid AND version = :v::bigint - 1
    RETURNING id, version
), old AS (
    SELECT l.* FROM lines2 l WHERE l.tenant = 't' AND l.cart_id = :cart_id::uuid AND l.sku = ANY(ARRAY[:sku::text]) AND EXISTS (SELECT FROM t)
), lines AS (
    INSERT INTO lines2 (tenant, cart_id, sku, position, name, quantity, unit_price, list_price, attributes)
    SELECT 't', t.id, n.sku, n.position, n.name, n.quantity, n.unit_price, n.list_price, n.attributes
    FROM t CROSS JOIN unnest(ARRAY[:sku::text], ARRAY[0::int8], ARRAY['Bench item'], ARRAY[:qty::int4], ARRAY[4.99::numeric], ARRAY[4.99::numeric], ARRAY[NULL::jsonb])
      AS n(sku, position, name, quantity, unit_price, list_price, attributes)
    ON CONFLICT (tenant, cart_id, sku) DO UPDATE SET name = excluded.name, quantity = excluded.quantity, unit_price = excluded.unit_price, list_price = excluded.list_price, attributes = excluded.attributes
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at, lines)
    SELECT 't', id, version, 'ITEMS_CHANGED', 'ACTIVE', 'ACTIVE', now(), now() + interval '30 days',
      (SELECT jsonb_agg(to_jsonb(old) - 'tenant' - 'cart_id') FROM old) FROM t
)
SELECT count(*) FROM t;
