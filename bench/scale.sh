#!/usr/bin/env bash
# Scale (issue 17): the same reads and writes through the service with
# BASE (1,000) carts in one tenant, then with SCALE (1,000,000).
#
#   bench/scale.sh
#   SCALE=200000 LIST_CONCURRENCY="4 16" bench/scale.sh
#
# For each size, on a fresh database: the release server applies the
# migrations and stops; bench/scale_load.sql loads the carts in SQL
# (generate_series: carts, cart_heads, cart_lines, cart_events as the service
# writes them; mostly ACTIVE, every 3333rd CONFIRMED, a customer per ~10
# carts; timed); VACUUM ANALYZE; the generic plans of the three ListCarts
# page queries (EXPLAIN ANALYZE); the server again, then through it:
#   list     ListCarts first pages of 20, unfiltered, by status CONFIRMED
#            (few match) and by a random customer, at LIST_CONCURRENCY;
#   get/add  GetCart and AddItems of random ACTIVE carts (SAMPLE of them,
#            drawn with ORDER BY random()), at CONCURRENCY.
# Results as JSON lines in $OUT; at the end the p99s against 20 ms and the
# SCALE/BASE ratios of get-cart and add-items.
#
# Environment: PGHOST/PGPORT/PGUSER, BASE (1000), SCALE (1000000), SAMPLE
# (1000), CONCURRENCY ("16"), LIST_CONCURRENCY ("4"), DURATION (10), DAYS
# (5: carts created over the last DAYS days, inside every retention
# default), PORT (30182), OUT (target/bench/scale.jsonl), NO_BUILD (1: use
# target/release as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
BASE=${BASE:-1000}
SCALE=${SCALE:-1000000}
SAMPLE=${SAMPLE:-1000}
CONCURRENCY=${CONCURRENCY:-16}
LIST_CONCURRENCY=${LIST_CONCURRENCY:-4}
DURATION=${DURATION:-10}
DAYS=${DAYS:-5}
PORT=${PORT:-30182}
OUT=${OUT:-target/bench/scale.jsonl}
DB=cart_bench_scale
mkdir -p "$(dirname "$OUT")" target/bench

[ "${NO_BUILD:-}" = 1 ] || cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
ADDR=http://127.0.0.1:$PORT
IDS=target/bench/scale-ids.txt

SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    true
}
trap cleanup EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
q() { psql -X -q -At -d "$DB" "$@"; }
start_server() {
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
        RUST_LOG=warn "$BIN/cart-service" >>target/bench/scale-server.log 2>&1 &
    SERVER_PID=$!
    "$BIN/cart-bench" --scenario ready --addr "$ADDR" >/dev/null
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
# One cart-bench run: prints its table, answers "rate p50 p99" of its one op.
run() { # label args...
    local label=$1
    shift
    "$BIN/cart-bench" --addr "$ADDR" --server-pid "$SERVER_PID" --json "$OUT" --label "$label" \
        --duration "${DURATION}s" "$@" | tee >(sed -n '/^JSON/!p' >&2) | sed -n 's/^JSON //p' |
        python3 -c 'import json,sys
d=json.load(sys.stdin)["result"]["ops"]; v=list(d.values())[0]
print(round(v["rate"]), round(v["p50_ms"], 2), round(v["p99_ms"], 2))'
}

# The page part of sql::LIST_CARTS / LIST_STATUS_CARTS / LIST_CUSTOMER_CARTS
# (src/store/postgres/sql/), prepared and forced to a generic plan.
explain() {
    q <<'SQL'
SET plan_cache_mode = force_generic_plan;
PREPARE unfiltered(text, timestamptz, uuid, int8) AS
  SELECT id, created_at, size FROM carts WHERE tenant = $1 AND (created_at, id) < ($2, $3)
  ORDER BY created_at DESC, id DESC LIMIT $4;
PREPARE by_status(text, timestamptz, uuid, int8, text[]) AS
  SELECT p.* FROM unnest($5::text[]) AS s(status) CROSS JOIN LATERAL (
    SELECT id, created_at, size FROM carts
    WHERE tenant = $1 AND status = s.status AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC LIMIT $4) p
  ORDER BY created_at DESC, id DESC LIMIT $4;
PREPARE by_customer(text, timestamptz, uuid, int8, text) AS
  SELECT id, created_at, size FROM carts
  WHERE tenant = $1 AND customer_id = $5 AND customer_id <> '' AND (created_at, id) < ($2, $3)
  ORDER BY created_at DESC, id DESC LIMIT $4;
\echo '-- unfiltered (generic plan)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE unfiltered('default', 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 21);
\echo '-- by status CONFIRMED (generic plan)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE by_status('default', 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 21, '{CONFIRMED}');
\echo '-- by customer (generic plan)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE by_customer('default', 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 21, 'bench-customer-7');
SQL
}

echo "== machine: $(nproc) cores, $(psql -X -Atc 'show server_version'), shared_buffers $(psql -X -Atc 'show shared_buffers'); commit $(git rev-parse --short HEAD); load $(load)"
: >target/bench/scale-server.log
declare -A R=()
for n in $BASE $SCALE; do
    customers=$((n / 10))
    dropdb --if-exists "$DB"
    createdb "$DB"
    start_server
    stop_server
    t0=$(date +%s.%N)
    q -v n="$n" -v customers="$customers" -v days="$DAYS" -v tenant=default -f bench/scale_load.sql >/dev/null
    secs=$(python3 -c "import time; print(round($(date +%s.%N) - $t0, 1))")
    echo "== $n carts loaded in SQL in ${secs} s (VACUUM ANALYZE included): $(q -c "SELECT (SELECT count(*) FROM carts) || ' carts (' || (SELECT count(*) FROM carts WHERE status = 'CONFIRMED') || ' CONFIRMED), ' || (SELECT count(*) FROM cart_lines) || ' lines, ' || (SELECT count(*) FROM cart_events) || ' events, database ' || pg_size_pretty(pg_database_size(current_database()))"); load $(load)"
    echo "{\"step\":\"scale-load\",\"carts\":$n,\"customers\":$customers,\"seconds\":$secs,\"db_bytes\":$(q -c 'SELECT pg_database_size(current_database())'),\"load\":\"$(load)\"}" >>"$OUT"
    explain | awk '/^Planning/ {skip = 1; next} skip && /^  Buffers/ {skip = 0; next} {skip = 0}
        /^--|Index|Scan|Execution|Limit|Buffers/' || true
    q -c "SELECT id FROM carts WHERE status = 'ACTIVE' ORDER BY random() LIMIT $SAMPLE" >"$IDS"
    start_server
    for c in $LIST_CONCURRENCY; do
        R[$n.list.$c]=$(run "scale $n list unfiltered" --scenario list --concurrency "$c")
        R[$n.status.$c]=$(run "scale $n list CONFIRMED" --scenario list --list-status CONFIRMED --concurrency "$c")
        R[$n.customer.$c]=$(run "scale $n list customer" --scenario list --list-customer 'bench-customer-{n}' \
            --customers "$customers" --concurrency "$c")
    done
    for c in $CONCURRENCY; do
        R[$n.get.$c]=$(run "scale $n get-cart" --scenario get-cart --cart-ids "$IDS" --concurrency "$c")
        R[$n.add.$c]=$(run "scale $n add-items" --scenario add-items --cart-ids "$IDS" --concurrency "$c")
    done
    echo "== after $n carts: load $(load)"
    stop_server
done

echo
for c in $LIST_CONCURRENCY; do
    for k in list status customer; do
        for n in $BASE $SCALE; do
            read -r rate p50 p99 <<<"${R[$n.$k.$c]}"
            verdict=$([ "$(python3 -c "print(int($p99 <= 20))")" = 1 ] && echo "<= 20 ms" || echo "OVER 20 ms")
            echo "RESULT scale $n carts ListCarts $k c=$c: ${rate}/s p50 $p50 ms p99 $p99 ms ($verdict)"
        done
    done
done
for c in $CONCURRENCY; do
    for k in get add; do
        read -r r1 p501 p991 <<<"${R[$BASE.$k.$c]}"
        read -r r2 p502 p992 <<<"${R[$SCALE.$k.$c]}"
        echo "RESULT scale $k c=$c: $SCALE carts ${r2}/s p50 $p502 p99 $p992 ms vs $BASE carts ${r1}/s p50 $p501 p99 $p991 ms = $(python3 -c "print(f'{$r2/$r1:.2f}')")x  (load $(load))"
        echo "{\"step\":\"scale\",\"op\":\"$k\",\"clients\":$c,\"base\":$BASE,\"scale\":$SCALE,\"base_rate\":$r1,\"scale_rate\":$r2,\"base_p99\":$p991,\"scale_p99\":$p992,\"load\":\"$(load)\"}" >>"$OUT"
    done
done
