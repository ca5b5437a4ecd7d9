-- Storage whose write cost follows the change, not the cart:
-- - a cart's lines get their own table, one row per state of a line with
--   the versions of the cart it belongs to, [valid_from, valid_to) (NULL:
--   current). A change ends the rows of the lines it touches and adds
--   their new states; older versions of a cart stay readable for replays
--   until retention drops them.
-- - carts.doc and cart_events.cart keep the cart without its lines (the
--   head). Events written before this migration keep their whole cart.
-- - an idempotency key points at the version of the cart it answered
--   instead of holding a copy of it.

CREATE TABLE cart_lines (
    tenant     text    NOT NULL,
    cart_id    uuid    NOT NULL,
    sku        text    NOT NULL,
    valid_from bigint  NOT NULL,
    valid_to   bigint,
    -- Order of first addition: a line keeps its place while it stays.
    position   bigint  NOT NULL,
    name       text    NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric NOT NULL,
    list_price numeric NOT NULL,
    -- NULL when the line has none.
    attributes jsonb,
    PRIMARY KEY (tenant, cart_id, sku, valid_from)
);

CREATE UNIQUE INDEX cart_lines_current_key ON cart_lines (tenant, cart_id, sku) WHERE valid_to IS NULL;

INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, unit_price,
                        list_price, attributes)
SELECT c.tenant, c.id, l.item->>'sku', c.version, l.n, l.item->>'name', (l.item->>'quantity')::integer,
       (l.item->>'unit_price')::numeric, (l.item->>'list_price')::numeric,
       CASE WHEN l.item->'attributes' IS NULL OR l.item->'attributes' = '{}'::jsonb THEN NULL
            ELSE l.item->'attributes' END
FROM carts c, jsonb_array_elements(c.doc->'items') WITH ORDINALITY AS l(item, n);

-- The encoded size of each cart (`domain::size::encoded_len`), so that a
-- ListCarts page is cut to its byte budget without reading every line.
-- Carts of before get an estimate from their JSON; the next change sets it.
ALTER TABLE carts ADD COLUMN size integer;
UPDATE carts SET size = octet_length(doc::text), doc = jsonb_set(doc, '{items}', '[]'::jsonb);
ALTER TABLE carts ALTER COLUMN size SET NOT NULL;

-- ListCarts by status, newest first: one index range per status asked for.
CREATE INDEX carts_tenant_status_created_idx ON carts (tenant, status, created_at DESC, id DESC);

ALTER TABLE idempotency_keys ADD COLUMN cart_id uuid, ADD COLUMN version bigint;
UPDATE idempotency_keys SET cart_id = (response->>'id')::uuid, version = (response->>'version')::bigint;
ALTER TABLE idempotency_keys ALTER COLUMN cart_id SET NOT NULL, ALTER COLUMN version SET NOT NULL,
    DROP COLUMN response;
CREATE INDEX idempotency_keys_cart_idx ON idempotency_keys (tenant, cart_id);
