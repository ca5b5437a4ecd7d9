-- Loads :n carts of tenant :'tenant' straight into the V6 schema, as the
-- service writes them (bench/scale.sh; keep in step with migrations and
-- src/store/postgres/sql/ INSERT_CART / WRITE_CART):
--   carts        a row each: 3 lines, size 787 (the service's encoded size
--                of such a cart), created over the last :days days (cart n
--                is the n-th oldest); ACTIVE (version 1, expiring 30 days
--                after creation) but every 3333rd CONFIRMED (version 3:
--                submitted a minute after creation, confirmed a minute later,
--                no expiry, final_at then); customers bench-customer-0 .. :customers - 1,
--                so a customer has about :n / :customers carts;
--   cart_heads   the head at version 1 (the cart without lines, as JSON the
--                way serde writes a domain Cart; details never change);
--   cart_lines   3 distinct SKUs of cart-bench's 20 (name and price as
--                cart-bench makes them), from version 1, at the places the
--                service gives a new cart's lines;
--   cart_events  CREATED at version 1; the CONFIRMED carts also
--                STATUS_CHANGED to AWAITING_CUSTOMER (2) and CONFIRMED (3).
-- No idempotency keys, no callbacks. Ids are md5('scale-' || n) as uuid.
\set ON_ERROR_STOP on
\timing on
CREATE TEMP TABLE g AS
SELECT n, md5('scale-' || n)::uuid AS id,
       now() - interval '1 day' * :days * (1 - n::float8 / :n) AS created_at,
       'bench-customer-' || (n % :customers) AS customer_id,
       n % 3333 = 0 AS confirmed
FROM generate_series(1, :n) n;

INSERT INTO carts (tenant, id, version, status, customer_id, reference, created_at, updated_at,
                   expires_at, expires_bucket, create_fingerprint, size, final_at)
SELECT :'tenant', id, CASE WHEN confirmed THEN 3 ELSE 1 END, CASE WHEN confirmed THEN 'CONFIRMED' ELSE 'ACTIVE' END,
       customer_id, NULL, created_at,
       CASE WHEN confirmed THEN created_at + interval '2 minutes' ELSE created_at END,
       CASE WHEN confirmed THEN NULL ELSE created_at + interval '30 days' END,
       CASE WHEN confirmed THEN NULL ELSE date_trunc('minute', created_at + interval '30 days') END,
       sha256(convert_to(id::text, 'UTF8')), 787,
       CASE WHEN confirmed THEN created_at + interval '2 minutes' END
FROM g ORDER BY n;

INSERT INTO cart_heads (tenant, cart_id, valid_from, doc)
SELECT :'tenant', id, 1, jsonb_build_object(
    'id', id, 'items', '[]'::jsonb, 'status', 'ACTIVE', 'channel', 'default', 'country', NULL,
    'version', 1, 'currency', 'USD', 'metadata', '{}'::jsonb, 'reference', '',
    'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'expires_at', to_char((created_at + interval '30 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updated_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'customer_id', customer_id, 'description', '', 'callback_url', '', 'cancel_reason', '',
    'confirmation_type', 'AUTOMATIC', 'callback_cancel_url', '', 'merged_into_cart_id', NULL)
FROM g ORDER BY n;

INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, unit_price,
                        list_price, attributes)
SELECT :'tenant', g.id, 'SKU-' || lpad(s::text, 4, '0'), 1, 65536 + k, 'Bench item ' || s, 1, p, p, NULL
FROM g CROSS JOIN generate_series(0, 2) k,
     LATERAL (SELECT (g.n * 7 + k * 5) % 20 AS s) x,
     LATERAL (SELECT ((1 + s % 50) || '.' || lpad((s * 37 % 100)::text, 2, '0'))::numeric AS p) y
ORDER BY g.n, k;

INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
SELECT :'tenant', id, 1, 'CREATED', 'ACTIVE', NULL, created_at, created_at + interval '30 days'
FROM g ORDER BY n;
INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, expires_at)
SELECT :'tenant', id, v, 'STATUS_CHANGED', s, p, created_at + interval '1 minute' * (v - 1), e
FROM g CROSS JOIN LATERAL (VALUES
    (2, 'AWAITING_CUSTOMER', 'ACTIVE', created_at + interval '16 minutes'),
    (3, 'CONFIRMED', 'AWAITING_CUSTOMER', NULL)) AS x(v, s, p, e)
WHERE confirmed ORDER BY n, v;

DROP TABLE g;
VACUUM ANALYZE;
