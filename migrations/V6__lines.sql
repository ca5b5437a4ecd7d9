-- Storage whose write cost follows the change, not the cart. A cart is
-- its row in `carts` (what changes with every version: version, status,
-- times, size), its head (everything else but the lines; JSON in
-- `cart_heads`) and its lines (`cart_lines`). Heads and lines keep a row
-- per state, with the versions of the cart it belongs to, [valid_from,
-- valid_to) (NULL: current): a change ends the rows of what it touches and
-- adds their new states, so adding one line to a 300-line cart writes one
-- line, and older versions stay readable for replays until retention
-- drops them. Events keep what changes with every version (status, times)
-- and no copy of the cart; events written before this migration keep
-- their whole cart. An idempotency key points at the version of the cart
-- it answered instead of holding a copy.

CREATE TABLE cart_heads (
    tenant     text   NOT NULL,
    cart_id    uuid   NOT NULL,
    valid_from bigint NOT NULL,
    valid_to   bigint,
    doc        jsonb  NOT NULL,
    PRIMARY KEY (tenant, cart_id, valid_from)
);

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

INSERT INTO cart_heads (tenant, cart_id, valid_from, doc)
SELECT tenant, id, version, jsonb_set(doc, '{items}', '[]'::jsonb) FROM carts;

INSERT INTO cart_lines (tenant, cart_id, sku, valid_from, position, name, quantity, unit_price,
                        list_price, attributes)
SELECT c.tenant, c.id, l.item->>'sku', c.version, l.n, l.item->>'name', (l.item->>'quantity')::integer,
       (l.item->>'unit_price')::numeric, (l.item->>'list_price')::numeric,
       CASE WHEN coalesce(l.item->'attributes', '{}'::jsonb) = '{}'::jsonb THEN NULL
            ELSE l.item->'attributes' END
FROM carts c, jsonb_array_elements(c.doc->'items') WITH ORDINALITY AS l(item, n);

-- `size`: the encoded size of each cart (`domain::size::encoded_len`), so
-- that a ListCarts page is cut to its byte budget without reading lines
-- (carts of before get an estimate from their JSON; their next change
-- sets it). `expires_bucket`: the minute of `expires_at`, indexed instead
-- of it, so that a change within the minute leaves every indexed column
-- as it was and Postgres updates the row in place (HOT, no index writes).
ALTER TABLE carts ADD COLUMN size integer, ADD COLUMN expires_bucket timestamptz;
UPDATE carts SET size = octet_length(doc::text), expires_bucket = date_trunc('minute', expires_at);
ALTER TABLE carts ALTER COLUMN size SET NOT NULL, DROP COLUMN doc;
ALTER TABLE carts SET (fillfactor = 80);
DROP INDEX carts_expires_idx;
CREATE INDEX carts_expires_bucket_idx ON carts (expires_bucket) WHERE expires_bucket IS NOT NULL;

-- `final_at`: when the cart reached a final status (it never changes after),
-- for retention. Indexed instead of `updated_at`, which changes with every
-- version and would keep the row from being updated in place.
ALTER TABLE carts ADD COLUMN final_at timestamptz;
UPDATE carts SET final_at = updated_at WHERE status IN ('CONFIRMED', 'CANCELLED', 'EXPIRED', 'MERGED');
DROP INDEX carts_final_updated_idx;
CREATE INDEX carts_final_at_idx ON carts (final_at) WHERE final_at IS NOT NULL;

-- ListCarts by status, newest first: one index range per status asked for.
CREATE INDEX carts_tenant_status_created_idx ON carts (tenant, status, created_at DESC, id DESC);

ALTER TABLE cart_events ADD COLUMN expires_at timestamptz, ALTER COLUMN cart DROP NOT NULL;
UPDATE cart_events SET expires_at = (cart->>'expires_at')::timestamptz;

ALTER TABLE idempotency_keys ADD COLUMN cart_id uuid, ADD COLUMN version bigint;
UPDATE idempotency_keys SET cart_id = (response->>'id')::uuid, version = (response->>'version')::bigint;
ALTER TABLE idempotency_keys ALTER COLUMN cart_id SET NOT NULL, ALTER COLUMN version SET NOT NULL,
    DROP COLUMN response;
CREATE INDEX idempotency_keys_cart_idx ON idempotency_keys (tenant, cart_id);
