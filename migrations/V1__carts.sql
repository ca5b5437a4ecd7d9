-- Carts, their event log (the outbox that watchers and callbacks read) and
-- idempotency keys. The tenant leads every key so that the schema can be
-- partitioned or sharded by tenant later.

CREATE TABLE carts (
    tenant             text        NOT NULL,
    id                 uuid        NOT NULL,
    version            bigint      NOT NULL,
    status             text        NOT NULL,
    customer_id        text        NOT NULL DEFAULT '',
    -- NULL when the caller gave none, so that it is not unique-checked.
    reference          text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    expires_at         timestamptz,
    -- Hash of the CreateCart request: a repeat with the same reference
    -- answers the cart only when the request is the same.
    create_fingerprint bytea       NOT NULL,
    -- The whole cart (lines included) as the domain serialises it: one row
    -- read and one row write per change.
    doc                jsonb       NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE UNIQUE INDEX carts_tenant_reference_key ON carts (tenant, reference) WHERE reference IS NOT NULL;
CREATE INDEX carts_tenant_created_idx ON carts (tenant, created_at DESC, id DESC);
CREATE INDEX carts_tenant_customer_idx ON carts (tenant, customer_id, created_at DESC, id DESC) WHERE customer_id <> '';
CREATE INDEX carts_expires_idx ON carts (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE cart_events (
    sequence        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text        NOT NULL,
    cart_id         uuid        NOT NULL,
    version         bigint      NOT NULL,
    type            text        NOT NULL,
    status          text        NOT NULL,
    previous_status text,
    occurred_at     timestamptz NOT NULL,
    -- The writing transaction, so that readers can tell which sequence
    -- numbers may still be in flight.
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    cart            jsonb       NOT NULL,
    UNIQUE (tenant, cart_id, version)
);

CREATE INDEX cart_events_tenant_sequence_idx ON cart_events (tenant, sequence);

CREATE TABLE idempotency_keys (
    tenant      text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    -- The answer the first call got.
    response    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
