-- one_trip_write.sql with a pg_notify in the transaction: what NOTIFY in
-- every write costs (NOTIFY takes a cluster-wide lock at commit).
\set c random(1, :ncarts)
\set s random(0, :nskus - 1)
WITH line AS (
    INSERT INTO ref_lines (cart_id, sku, name, quantity, unit_price) VALUES (:c, 'SKU-' || lpad(:s::text, 4, '0'), 'Bench item', 1, 4.99)
    ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = ref_lines.quantity + 1, name = excluded.name, unit_price = excluded.unit_price
    RETURNING cart_id
), bump AS (
    UPDATE ref_carts SET version = version + 1, updated_at = now() WHERE id = :c RETURNING id, version
), ev AS (
    INSERT INTO ref_events (cart_id, version, type, occurred_at) SELECT id, version, 'ITEMS_CHANGED', now() FROM bump
)
SELECT pg_notify('ref_events', :c::text), (SELECT count(*) FROM line);
