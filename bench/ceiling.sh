#!/usr/bin/env bash
# The same-run ceiling: the service against pgbench replaying the service's
# own SQL, on the same schema and data, at the same concurrency and duration.
#
#   bench/ceiling.sh                       # get-cart and add-items at 64 clients
#   CONCURRENCY="16 64" REPEAT=2 bench/ceiling.sh
#
# Steps: a fresh database; the release server on it (migrations run at
# start; start-to-ready time and idle RSS are measured); carts seeded through
# the service by cart-bench; then for each scenario and concurrency the
# service run (cart-bench) and the pgbench run (bench/pgbench/*.sql), back to
# back, and their ratio. Then the issue's reference writes (six statements,
# one round trip, one round trip + pg_notify) on a normalised schema in a
# scratch database. Results are appended as JSON lines to $OUT.
#
# Environment: PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres), DURATION
# (10), WARMUP (2), CARTS (1000), SKUS (20), CONCURRENCY ("64"), REPEAT (1),
# SCENARIOS ("get-cart add-items"), REFERENCE (1: run the reference writes),
# PORT (30151), OUT (target/bench/ceiling.jsonl), SERVER_ENV (extra env for
# the server, e.g. "CART_DB_POOL_SIZE=8").
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CARTS=${CARTS:-1000}
SKUS=${SKUS:-20}
CONCURRENCY=${CONCURRENCY:-64}
REPEAT=${REPEAT:-1}
SCENARIOS=${SCENARIOS:-get-cart add-items}
REFERENCE=${REFERENCE:-1}
PORT=${PORT:-30151}
OUT=${OUT:-target/bench/ceiling.jsonl}
SERVER_ENV=${SERVER_ENV:-}
DB=cart_bench
REFDB=cart_bench_ref
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1)
[ -x "$PGBENCH" ] || { echo "pgbench not found" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" target/bench

cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
ADDR=http://127.0.0.1:$PORT

SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql -Atc 'show server_version') (fsync $(psql -Atc 'show fsync'), synchronous_commit $(psql -Atc 'show synchronous_commit')); load $(load)"

dropdb --if-exists "$DB"
createdb "$DB"
start_server() {
    # shellcheck disable=SC2086
    env $SERVER_ENV DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" CART_METRICS_ADDR=127.0.0.1:0 \
        RUST_LOG=warn "$BIN/cart-service" >>target/bench/server.log 2>&1 &
    SERVER_PID=$!
}
stop_server() { # frees its connections for pgbench (max_connections)
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
: >target/bench/server.log
start_server
"$BIN/cart-bench" --scenario ready --addr "$ADDR" --server-pid "$SERVER_PID" --json "$OUT" --label start | sed '/^JSON/d'

"$BIN/cart-bench" --scenario seed --addr "$ADDR" --carts "$CARTS" --skus "$SKUS" --concurrency 32 | sed '/^JSON/d' || true
psql -q -d "$DB" <<SQL
CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO bench_ids SELECT row_number() OVER (ORDER BY id), id FROM carts WHERE tenant = 'default';
VACUUM ANALYZE;
SQL
echo "== idle server RSS after seeding: $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVER_PID/status)"

tps_of() { sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'; }

run_pgbench() { # script clients [db] [extra -D...]
    local script=$1 c=$2 db=${3:-$DB}
    shift 3 || shift $#
    "$PGBENCH" -n -M prepared -c "$c" -j 2 -T "$DURATION" -f "bench/pgbench/$script" \
        -D tenant=default -D ncarts="$CARTS" -D nskus="$SKUS" "$@" "$db" 2>&1
}

pg_latency() { sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'; }

declare -A SVC_ADD=()
for round in $(seq 1 "$REPEAT"); do
for c in $CONCURRENCY; do
    if [ "$c" -gt 90 ]; then
        echo "(pgbench skipped at $c clients: max_connections is $(psql -Atc 'show max_connections'))"
    fi
    for s in $SCENARIOS; do
        if [ -z "$SERVER_PID" ]; then
            start_server
            "$BIN/cart-bench" --scenario ready --addr "$ADDR" >/dev/null
        fi
        svc_json=$("$BIN/cart-bench" --scenario "$s" --addr "$ADDR" --no-seed --carts "$CARTS" --skus "$SKUS" \
            --concurrency "$c" --duration "${DURATION}s" --warmup "${WARMUP}s" --server-pid "$SERVER_PID" \
            --json "$OUT" --label "ceiling-service round $round" | tee -a /dev/stderr | sed -n 's/^JSON //p')
        svc=$(echo "$svc_json" | python3 -c 'import json,sys; d=json.load(sys.stdin)["result"]["ops"]; print(round(sum(v["rate"] for v in d.values()),1) or 0.001)')
        svc_p99=$(echo "$svc_json" | python3 -c 'import json,sys; d=json.load(sys.stdin)["result"]["ops"]; print(max([v["p99_ms"] for v in d.values()] or [0]))')
        [ "$s" = add-items ] && SVC_ADD[$c]=$svc
        if [ "$c" -gt 90 ] || [ ! -f "bench/pgbench/${s//-/_}.sql" ]; then
            echo "RESULT $s c=$c service ${svc}/s p99 ${svc_p99} ms  pgbench n/a  (load $(load))"
            continue
        fi
        script=${s//-/_}.sql
        stop_server
        pg_out=$(run_pgbench "$script" "$c")
        pg=$(echo "$pg_out" | tps_of)
        failed=$(echo "$pg_out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
        ratio=$(python3 -c "print(f'{$svc/$pg:.2f}')")
        echo "RESULT $s c=$c service ${svc}/s p99 ${svc_p99} ms  pgbench(own SQL) ${pg}/s lat ${pg_out:+$(echo "$pg_out" | pg_latency)} ms failed ${failed:-0}  ratio ${ratio}x  (load $(load))"
        echo "{\"kind\":\"pgbench\",\"script\":\"$script\",\"clients\":$c,\"tps\":$pg,\"service\":$svc,\"ratio\":$ratio,\"round\":$round,\"load\":\"$(load)\"}" >>"$OUT"
    done
done
done

stop_server

if [ "$REFERENCE" = 1 ]; then
    dropdb --if-exists "$REFDB"
    createdb "$REFDB"
    psql -q -d "$REFDB" -v ncarts="$CARTS" -f bench/pgbench/reference_schema.sql
    for c in $CONCURRENCY; do
        [ "$c" -gt 90 ] && continue
        for script in six_statement_write.sql one_trip_write.sql one_trip_write_notify.sql; do
            out=$(run_pgbench "$script" "$c" "$REFDB")
            tps=$(echo "$out" | tps_of)
            vs=""
            if [ -n "${SVC_ADD[$c]:-}" ]; then
                vs="  service add-items ${SVC_ADD[$c]}/s = $(python3 -c "print(f'{${SVC_ADD[$c]}/$tps:.2f}')")x of it"
            fi
            echo "RESULT reference $script c=$c pgbench ${tps}/s lat $(echo "$out" | pg_latency) ms${vs}  (load $(load))"
            echo "{\"kind\":\"reference\",\"script\":\"$script\",\"clients\":$c,\"tps\":$tps,\"load\":\"$(load)\"}" >>"$OUT"
        done
    done
fi
