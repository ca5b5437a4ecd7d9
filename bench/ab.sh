#!/usr/bin/env bash
# A/B of two server builds (or two server settings) in the same run,
# alternating A B, B A so drift in machine load hits both alike.
#
#   bench/ab.sh <binary-A> <binary-B> [scenario...]
#   A_ENV="CART_DB_POOL_SIZE=16" B_ENV="CART_DB_POOL_SIZE=32" bench/ab.sh target/release/cart-service target/release/cart-service
#
# Environment: ROUNDS (2), CONCURRENCY (64), DURATION (10), CARTS (1000), RATE
# (unset: closed loop; set: calls per second, e.g. watch-latency's writes),
# PORT (30152), A_ENV / B_ENV (extra server environment), LINES (unset: carts
# as seed makes them; set: carts of this many distinct lines, the scenarios
# over as many SKUs). Each side gets its
# own fresh database, seeded through the service the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2
shift 2
SCENARIOS=${*:-get-cart add-items}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
ROUNDS=${ROUNDS:-2} CONCURRENCY=${CONCURRENCY:-64} DURATION=${DURATION:-10} CARTS=${CARTS:-1000}
PORT=${PORT:-30152}
A_ENV=${A_ENV:-} B_ENV=${B_ENV:-}
LINES_ARGS=${LINES:+--skus $LINES}
BENCH=${BENCH:-target/release/cart-bench}
mkdir -p target/bench
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; true' EXIT

run_side() { # label binary env
    local label=$1 bin=$2 extra=$3 db=cart_ab_$1
    # shellcheck disable=SC2086
    env $extra DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
        RUST_LOG=warn "$bin" >>target/bench/ab-server.log 2>&1 &
    PID=$!
    "$BENCH" --scenario ready --addr "http://127.0.0.1:$PORT" >/dev/null
    for s in $SCENARIOS; do
        # shellcheck disable=SC2086
        "$BENCH" --scenario "$s" --addr "http://127.0.0.1:$PORT" --no-seed --carts "$CARTS" \
            --concurrency "$CONCURRENCY" --duration "${DURATION}s" --server-pid "$PID" --label "ab-$label" ${RATE:+--rate "$RATE"} $LINES_ARGS |
            python3 bench/summary.py "$label"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

for side in A B; do
    db=cart_ab_$side
    dropdb --if-exists "$db"; createdb "$db"
    bin=$A; extra=$A_ENV
    [ "$side" = B ] && { bin=$B; extra=$B_ENV; }
    # shellcheck disable=SC2086
    env $extra DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
        RUST_LOG=warn "$bin" >>target/bench/ab-server.log 2>&1 &
    PID=$!
    "$BENCH" --scenario ready --addr "http://127.0.0.1:$PORT" >/dev/null
    # shellcheck disable=SC2086
    "$BENCH" --scenario seed --addr "http://127.0.0.1:$PORT" --carts "$CARTS" --concurrency 32 \
        ${LINES:+--seed-items $LINES --distinct-lines} $LINES_ARGS >/dev/null 2>&1
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
    # Statistics as autovacuum would soon have them, alike for both sides.
    psql -q -d "$db" -c "VACUUM ANALYZE"
done
# The order flips every round (A B, B A, ...): a host that drifts one way
# would otherwise favour the side that always runs second.
for r in $(seq 1 "$ROUNDS"); do
    echo "-- round $r"
    if [ $((r % 2)) -eq 1 ]; then
        run_side A "$A" "$A_ENV"
        run_side B "$B" "$B_ENV"
    else
        run_side B "$B" "$B_ENV"
        run_side A "$A" "$A_ENV"
    fi
done
