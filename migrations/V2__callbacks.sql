-- Callback deliveries: an outbox written in the same statement as the status
-- change that calls for it, then POSTed by the delivery workers.

CREATE TABLE callback_deliveries (
    -- Also the `webhook-id` header: stable across retries.
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    cart_id         uuid        NOT NULL,
    version         bigint      NOT NULL,
    url             text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- pending, delivered or failed
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A worker that claimed the row owns it until then.
    lease_until     timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL
);

CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX callback_deliveries_cart_idx ON callback_deliveries (tenant, cart_id);
