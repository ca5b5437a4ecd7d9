-- The reference write: AddItems on a normalised schema as six statements
-- after BEGIN (lock, upsert line, bump version, event row, read lines,
-- commit), each its own round trip.
\set c random(1, :ncarts)
\set s random(0, :nskus - 1)
BEGIN;
SELECT version FROM ref_carts WHERE id = :c FOR UPDATE;
INSERT INTO ref_lines (cart_id, sku, name, quantity, unit_price) VALUES (:c, 'SKU-' || lpad(:s::text, 4, '0'), 'Bench item', 1, 4.99)
    ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = ref_lines.quantity + 1, name = excluded.name, unit_price = excluded.unit_price;
UPDATE ref_carts SET version = version + 1, updated_at = now() WHERE id = :c;
INSERT INTO ref_events (cart_id, version, type, occurred_at) SELECT id, version, 'ITEMS_CHANGED', now() FROM ref_carts WHERE id = :c;
SELECT sku, name, quantity, unit_price FROM ref_lines WHERE cart_id = :c ORDER BY sku;
COMMIT;
