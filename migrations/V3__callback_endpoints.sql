-- The endpoint (scheme-less authority: host[:port], lower case) of each
-- callback URL, so that delivery workers can cap concurrency and back off
-- per endpoint in the claim itself. Generated, so the writes that insert
-- outbox rows stay as they are.

ALTER TABLE callback_deliveries
    ADD COLUMN endpoint text GENERATED ALWAYS AS (lower(substring(url FROM '^[^:/?#]+://([^/?#]*)'))) STORED;
