-- GetCart as the service runs it: sql::GET_CART, one round trip.
-- The cart is picked at random from the seeded carts; bench_ids(n, id) maps
-- 1..:ncarts to their ids (pgbench variables cannot hold a uuid), looked up
-- inside the same statement so it stays one round trip.
\set n random(1, :ncarts)
SELECT doc FROM carts WHERE tenant = :tenant AND id = (SELECT id FROM bench_ids WHERE n = :n);
