-- Seed for the storage alternatives (issue 17), on a database migrated by the
-- service (V1..V6 applied): :ncarts carts of :nlines lines, and the in-place
-- variant's table beside the versioned one. Used with versioned_lines.sql and
-- inplace_lines.sql (pgbench -M prepared -D ncarts=...); BENCHMARKS.md tells the result.
CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO bench_ids SELECT n, gen_random_uuid() FROM generate_series(1, :ncarts) n;
INSERT INTO carts (tenant, id, version, status, customer_id, created_at, updated_at, expires_at, expires_bucket, create_fingerprint, size)
SELECT 't', id, 1, 'ACTIVE', '', now(), now(), now() + interval '30 days', date_trunc('minute', now() + interval '30 days'), '\x00', 300 FROM bench_ids;
INSERT INTO cart_heads (tenant, cart_id, valid_from, doc) SELECT 't', id, 1, '{"currency":"USD"}' FROM bench_ids;
INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, unit_price, list_price)
SELECT 't', b.id, 'SKU-' || lpad(s::text, 4, '0'), 1, s, 'Bench item ' || s, 1, 4.99, 4.99 FROM bench_ids b, generate_series(0, :nlines - 1) s;
-- alternative: lines in place, events carry the before-states of changed lines
CREATE TABLE lines2 (tenant text NOT NULL, cart_id uuid NOT NULL, sku text NOT NULL, position bigint NOT NULL,
  name text NOT NULL, quantity int NOT NULL, unit_price numeric NOT NULL, list_price numeric NOT NULL, attributes jsonb,
  PRIMARY KEY (tenant, cart_id, sku)) WITH (fillfactor = 80);
INSERT INTO lines2 SELECT tenant, cart_id, sku, position, name, quantity, unit_price, list_price, attributes FROM cart_lines;
ALTER TABLE cart_events ADD COLUMN lines jsonb;
VACUUM ANALYZE;
