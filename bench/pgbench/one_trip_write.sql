-- The same normalised write as ONE round trip (a data-modifying CTE): the
-- one-round-trip ceiling the issue quotes.
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
SELECT sku, name, quantity, unit_price FROM ref_lines WHERE cart_id = :c;
