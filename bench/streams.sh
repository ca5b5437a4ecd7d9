#!/usr/bin/env bash
# Many open WatchCart streams on one release replica (issue 14): server RSS
# before and with them open (KiB per stream), GetCart p99 idle vs with them
# open. One server binary per argument, each on a fresh database, back to
# back, so a before/after runs in one command:
#
#   bench/streams.sh                                   # target/release/cart-service
#   bench/streams.sh /tmp/cart-service-old target/release/cart-service
#
# Environment: PGHOST/PGPORT/PGUSER, STREAMS (100000), CARTS (10000: ten
# streams a cart), WATCH_CONNECTIONS (600: the server allows 200 streams
# per HTTP/2 connection), CONCURRENCY (16), DURATION (10), PORT (30195),
# OUT (target/bench/streams.jsonl), NO_BUILD (set: skip the cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
STREAMS=${STREAMS:-100000}
CARTS=${CARTS:-10000}
WATCH_CONNECTIONS=${WATCH_CONNECTIONS:-600}
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-10}
PORT=${PORT:-30195}
OUT=${OUT:-target/bench/streams.jsonl}
DB=cart_bench_streams
mkdir -p "$(dirname "$OUT")" target/bench
[ -n "${NO_BUILD:-}" ] || cargo build --release --bin cart-service --bin cart-bench
[ $# -gt 0 ] || set -- target/release/cart-service
ulimit -n 65536 2>/dev/null || true
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT
ADDR=http://127.0.0.1:$PORT

for server in "$@"; do
    dropdb --if-exists "$DB" 2>/dev/null
    createdb "$DB"
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
        CART_MAX_WATCHERS_PER_TENANT="$STREAMS" RUST_LOG=warn "$server" >>target/bench/streams-server.log 2>&1 &
    PID=$!
    target/release/cart-bench --scenario ready --addr "$ADDR" >/dev/null
    target/release/cart-bench --scenario seed --addr "$ADDR" --carts "$CARTS" --concurrency 32 | sed '/^JSON/d'
    psql -q -d "$DB" -c "VACUUM ANALYZE"
    echo "== $server: $STREAMS streams on $CARTS carts over $WATCH_CONNECTIONS connections (load $(cut -d' ' -f1-3 /proc/loadavg))"
    target/release/cart-bench --scenario watchers --addr "$ADDR" --no-seed --carts "$CARTS" --watchers "$STREAMS" \
        --watch-connections "$WATCH_CONNECTIONS" --concurrency "$CONCURRENCY" --duration "${DURATION}s" \
        --server-pid "$PID" --json "$OUT" --label "streams $server" | sed '/^JSON/d' |
        python3 -c '
import re, sys
for line in sys.stdin:
    print(line, end="")
    m = re.search(r"before Some\((\d+)\), (\d+) streams open Some\((\d+)\)", line)
    if m and int(m.group(2)):
        before, n, open_ = map(int, m.groups())
        print(f"RESULT {(open_ - before) / n:.2f} KiB per stream ({n} open, RSS {open_ // 1024} MiB)")
'
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
done
