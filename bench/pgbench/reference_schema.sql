-- The reference the issue names: a normalised cart (lines in their own
-- table), in its own scratch database. Not the service's schema.
DROP TABLE IF EXISTS ref_events, ref_lines, ref_carts;
CREATE TABLE ref_carts (
    id         bigint PRIMARY KEY,
    version    bigint      NOT NULL,
    status     text        NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE ref_lines (
    cart_id    bigint  NOT NULL REFERENCES ref_carts (id),
    sku        text    NOT NULL,
    name       text    NOT NULL,
    quantity   int     NOT NULL,
    unit_price numeric NOT NULL,
    PRIMARY KEY (cart_id, sku)
);
CREATE TABLE ref_events (
    sequence    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cart_id     bigint      NOT NULL,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL
);
INSERT INTO ref_carts SELECT n, 1, 'ACTIVE', now() FROM generate_series(1, :ncarts) n;
INSERT INTO ref_lines SELECT n, 'SKU-' || lpad(s::text, 4, '0'), 'Bench item ' || s, 1, 4.99
    FROM generate_series(1, :ncarts) n, generate_series(0, 2) s;
VACUUM ANALYZE ref_carts, ref_lines, ref_events;
