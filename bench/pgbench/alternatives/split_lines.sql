-- The alternative measured on 3 December (BENCHMARKS.md, "Writes without
-- empty parts"): current lines in a table of their own, updated in place
-- (HOT: no indexed column changes), and each state a change ends copied
-- into a history table (one index entry) instead of ended in place (two).
-- Against the plain write (WRITE_CART_ONE_LINE_PLAIN with the same read).
-- Setup on a database seeded by storage.sh's seed (tenant `small`), with
-- bench_ids as in storage.sh's own_sql:
--   CREATE TABLE lines_cur (tenant text NOT NULL, cart_id uuid NOT NULL, sku text NOT NULL,
--     valid_from bigint NOT NULL, position bigint NOT NULL, name text NOT NULL, quantity int NOT NULL,
--     unit_price numeric NOT NULL, list_price numeric NOT NULL, attributes jsonb,
--     PRIMARY KEY (tenant, cart_id, sku));
--   CREATE TABLE lines_hist (LIKE lines_cur, valid_to bigint NOT NULL,
--     PRIMARY KEY (tenant, cart_id, sku, valid_from));   -- columns in lines_cur's order, then valid_to
--   INSERT INTO lines_cur SELECT tenant, cart_id, sku, valid_from, position, name, quantity,
--     unit_price, list_price, attributes FROM cart_lines WHERE valid_to IS NULL;
-- pgbench -n -M prepared -c 16 -j 2 -T 6 -f split_lines.sql -D tenant=small -D ncarts=1000 -D nskus=3
\set n random(1, :ncarts)
\set s random(0, :nskus - 1)
SELECT b.id AS cart_id, c.version + 1 AS v, c.customer_id AS cust, l.sku AS sku, l.quantity + 1 AS qty, c.size AS size
FROM bench_ids b JOIN carts c ON c.tenant = :tenant AND c.id = b.id
JOIN lines_cur l ON l.tenant = :tenant AND l.cart_id = b.id AND l.sku = 'SKU-' || lpad(:s::int::text, 4, '0')
WHERE b.n = :n \gset
WITH t AS (UPDATE carts SET version = :v, status = 'ACTIVE', customer_id = :cust, updated_at = now(),
                     expires_at = now() + interval '30 days',
                     expires_bucket = date_trunc('minute', (now() + interval '30 days')::timestamptz), size = :size,
                     final_at = NULL::timestamptz
    WHERE tenant = :tenant AND id = :cart_id AND version = :v::bigint - 1
    RETURNING id, version), o AS (
    SELECT * FROM lines_cur WHERE tenant = :tenant AND cart_id = :cart_id AND sku = :sku AND EXISTS (SELECT FROM t) FOR UPDATE
), cur AS (
    UPDATE lines_cur c SET quantity = :qty, valid_from = :v, name = 'Bench item', unit_price = 4.99, list_price = 4.99
    FROM o WHERE c.tenant = o.tenant AND c.cart_id = o.cart_id AND c.sku = o.sku
), hist AS (
    INSERT INTO lines_hist SELECT o.*, :v FROM o
), ev AS (INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
    SELECT :tenant, id, version, 'ITEMS_CHANGED', 'ACTIVE', 'ACTIVE', now(), now() + interval '30 days' FROM t) SELECT count(*) FROM t;
