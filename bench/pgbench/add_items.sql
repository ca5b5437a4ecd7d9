-- AddItems as the service runs it without a request_id: sql::GET_CART, then
-- sql::WRITE_CART (one data-modifying CTE: cart row, event row, no key),
-- two round trips in autocommit. The doc written back is the doc read with
-- its version bumped (jsonb_set, in the read: Postgres does the work the
-- service does in Rust, so this is conservative), so its size is what the
-- service writes (the carts the service grew) and the service can go on
-- using the carts afterwards. The read also returns the id and next
-- version, which the service takes from the doc. $6 now / $7 expires are
-- now() expressions.
\set n random(1, :ncarts)
SELECT jsonb_set(doc, '{version}', to_jsonb(version + 1)) AS doc, id AS cid, version + 1 AS v FROM carts WHERE tenant = :tenant AND id = (SELECT id FROM bench_ids WHERE n = :n) \gset
WITH upd AS (
    UPDATE carts SET version = :v, status = 'ACTIVE', customer_id = customer_id, updated_at = now(), expires_at = now() + interval '30 days', doc = :doc
    WHERE tenant = :tenant AND id = :cid AND version = :v::bigint - 1
    RETURNING id
), ev AS (
    INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart)
    SELECT :tenant, id, :v, 'ITEMS_CHANGED', 'ACTIVE', 'ACTIVE', now(), :doc FROM upd
), idem AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, response, created_at)
    SELECT :tenant, NULL::text, NULL::bytea, NULL::jsonb, now() FROM upd WHERE NULL::text IS NOT NULL
)
SELECT count(*) FROM upd;
