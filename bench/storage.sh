#!/usr/bin/env bash
# Storage benchmarks of issue 17: what a change writes and whether its cost
# follows the change or the cart, and whether retention keeps the tables flat.
#
#   bench/storage.sh                                # every step: wal ratio steady
#   STEPS="wal" CALLS=20000 bench/storage.sh
#   STEPS="steady" STEADY_DURATION=60 bench/storage.sh
#
# Steps (one release replica; results appended as JSON lines to $OUT):
#   wal     Two tenants on a fresh database, CARTS carts each with SMALL (3)
#           and LARGE (300) distinct lines. For each cart size, without and
#           with a request_id: CHECKPOINT, then twice: pg_current_wal_lsn(),
#           exactly CALLS AddItems of one unit of a line the cart has
#           (cart-bench --calls), pg_current_wal_lsn() again, and
#           bench/wal_per_call.sql counts the WAL of this database in between
#           with pg_walinspect (the cluster is shared), by record type and by
#           relation, full-page images apart. Batch 1 pays a full-page image
#           for the first change of each page after the checkpoint; batch 2,
#           in the same checkpoint cycle, mostly does not.
#   ratio   add-items (and get-cart, for information) on the SMALL vs the LARGE
#           carts, alternating per round, at each CONCURRENCY: large/small;
#           then pgbench of the service's own SQL (bench/pgbench/add_items.sql,
#           get_cart.sql) on the same carts, server stopped: what Postgres
#           alone makes of the cart size.
#   steady  Twice on a fresh database each, the same load: AddItems paced at
#           STEADY_RATE on 1,000 seeded carts of SMALL distinct lines (each
#           add one more unit of a line the cart has, so the carts' current
#           lines stay as many and every add ends a line state that only
#           retention removes) plus LIFECYCLE_RATE checkout
#           lifecycles/s that all end final (confirmed, cancelled, or expired
#           awaiting the customer: CART_CHECKOUT_TIMEOUT=10s), with callbacks
#           and request ids, for STEADY_DURATION seconds. First without
#           retention (CART_EVENT_RETENTION=7d CART_RETENTION=90d), then with
#           RETENTION (10s) for both. Row counts every 10 s (cart_lines also
#           as ended states: history); a table is flat when the mean of the
#           last third of the samples after 20 s is at most 1.1x the mean of
#           the first third. Add-items p99 after the first 20 s of each run,
#           and their ratio.
#
# Environment: PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres), CARTS (1000),
# SMALL (3), LARGE (300), CALLS (10000), WAL_CONCURRENCY (16), CONCURRENCY
# ("16 64"), ROUNDS (2), DURATION (10), STEADY_DURATION (180), STEADY_RATE
# (unset: half the add-items peak at 64 clients, measured first),
# LIFECYCLE_RATE (20), RETENTION (10s), PORT (30181), OUT
# (target/bench/storage.jsonl), STEPS ("wal ratio steady"), NO_BUILD (1: use
# target/release as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
CARTS=${CARTS:-1000}
SMALL=${SMALL:-3}
LARGE=${LARGE:-300}
CALLS=${CALLS:-10000}
WAL_CONCURRENCY=${WAL_CONCURRENCY:-16}
CONCURRENCY=${CONCURRENCY:-16 64}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
STEADY_DURATION=${STEADY_DURATION:-180}
STEADY_RATE=${STEADY_RATE:-}
LIFECYCLE_RATE=${LIFECYCLE_RATE:-20}
RETENTION=${RETENTION:-10s}
PORT=${PORT:-30181}
OUT=${OUT:-target/bench/storage.jsonl}
STEPS=${STEPS:-wal ratio steady}
DB=cart_bench_storage
mkdir -p "$(dirname "$OUT")" target/bench

[ "${NO_BUILD:-}" = 1 ] || cargo build --release --bin cart-service --bin cart-bench
BIN=target/release
ADDR=http://127.0.0.1:$PORT
KEYS="small:bench-small,large:bench-large"
declare -A KEY=([small]=bench-small [large]=bench-large)
declare -A LINES=([small]=$SMALL [large]=$LARGE)

SERVER_PID=
COUNTS_PID=
cleanup() {
    [ -n "$COUNTS_PID" ] && kill "$COUNTS_PID" 2>/dev/null
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    true
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
q() { psql -X -q -At -d "$DB" "$@"; }
bench() { "$BIN/cart-bench" --addr "$ADDR" --server-pid "$SERVER_PID" --json "$OUT" "$@"; }
rate_of() { sed -n 's/^JSON //p' | python3 -c 'import json,sys
d=json.load(sys.stdin)["result"]["ops"]; print(round(sum(v["rate"] for v in d.values()),1))'; }
json() { echo "$1" >>"$OUT"; }

start_server() { # extra env...
    # shellcheck disable=SC2086
    env "$@" DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" CART_LISTEN_ADDR="127.0.0.1:$PORT" \
        CART_METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn "$BIN/cart-service" >>target/bench/storage-server.log 2>&1 &
    SERVER_PID=$!
    "$BIN/cart-bench" --scenario ready --addr "$ADDR" >/dev/null
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
fresh_db() {
    dropdb --if-exists "$DB"
    createdb "$DB"
}

echo "== machine: $(nproc) cores, $(psql -X -Atc 'show server_version') (fsync $(psql -X -Atc 'show fsync'), full_page_writes $(psql -X -Atc 'show full_page_writes'), wal_compression $(psql -X -Atc 'show wal_compression')); commit $(git rev-parse --short HEAD); load $(load)"
: >target/bench/storage-server.log

# Two tenants: `small` carts of SMALL lines, `large` carts of LARGE lines,
# each line a distinct SKU, so that AddItems with --skus = lines always adds
# one unit to a line the cart has.
seeded=
seed_tenants() {
    [ -n "$seeded" ] && return
    fresh_db
    q -c 'CREATE EXTENSION pg_walinspect'
    start_server CART_API_KEYS="$KEYS"
    for t in small large; do
        bench --scenario seed --api-key "${KEY[$t]}" --carts "$CARTS" --seed-items "${LINES[$t]}" --distinct-lines \
            --skus "${LINES[$t]}" --concurrency 16 --label "storage seed $t" | sed '/^JSON/d'
    done
    q -c 'VACUUM ANALYZE'
    echo "== seeded: $(q -c "SELECT string_agg(tenant || ' ' || n || ' carts, ' || l || ' lines', '; ') FROM (SELECT c.tenant, count(DISTINCT c.id) AS n, count(*) AS l FROM carts c JOIN cart_lines l ON l.tenant = c.tenant AND l.cart_id = c.id AND l.valid_to IS NULL GROUP BY 1) s"); database $(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
    seeded=1
}

wal_step() {
    seed_tenants
    for t in small large; do
        for keyed in no yes; do
            flag=()
            [ "$keyed" = yes ] && flag=(--request-ids)
            q -c 'CHECKPOINT'
            # Batch 1 starts right after the checkpoint, so the first change
            # of every page it touches carries a full-page image; batch 2
            # follows in the same checkpoint cycle.
            for batch in 1 2; do
                redo0=$(q -c 'SELECT redo_lsn FROM pg_control_checkpoint()')
                lsn0=$(q -c 'SELECT pg_current_wal_lsn()')
                bench --scenario add-items --api-key "${KEY[$t]}" --no-seed --carts "$CARTS" --skus "${LINES[$t]}" \
                    --calls "$CALLS" --concurrency "$WAL_CONCURRENCY" "${flag[@]}" \
                    --label "wal $t request_id=$keyed batch $batch" | sed '/^JSON/d'
                lsn1=$(q -c 'SELECT pg_current_wal_lsn()')
                redo1=$(q -c 'SELECT redo_lsn FROM pg_control_checkpoint()')
                cp=no
                [ "$redo0" = "$redo1" ] || cp=yes
                echo "== WAL, ${LINES[$t]}-line carts, request_id $keyed, batch $batch: $CALLS AddItems of one unit, $lsn0 .. $lsn1 (a checkpoint in between: $cp)"
                report=$(psql -X -q -d "$DB" -v lsn0="$lsn0" -v lsn1="$lsn1" -v calls="$CALLS" -f bench/wal_per_call.sql)
                echo "$report" | sed '/^WALJSON/d'
                w=$(echo "$report" | sed -n 's/^WALJSON //p')
                python3 - "$w" "${LINES[$t]}" "$keyed" "$batch" "$cp" "$(load)" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
lines, keyed, batch, cp, load = sys.argv[2:7]
when = "right after a CHECKPOINT" if batch == "1" else "next, same checkpoint cycle"
print(f"RESULT wal {lines}-line carts, request_id {keyed}, batch {batch} ({when}; checkpoint during it: {cp}): "
      f"{d['bytes_per_call']:.0f} B per call = {d['without_fpi_per_call']:.0f} B of records + "
      f"{d['fpi_per_call']:.0f} B of full-page images ({d['fpi_records']} records with one); "
      f"{d['commits']} commits for {d['calls']} calls; this database {d['bytes']} of {d['lsn_distance']:.0f} B "
      f"of cluster WAL  (load {load})")
PY
                json "{\"step\":\"wal\",\"lines\":${LINES[$t]},\"request_id\":\"$keyed\",\"batch\":$batch,\"checkpoint_during\":\"$cp\",\"carts\":$CARTS,\"concurrency\":$WAL_CONCURRENCY,\"wal\":$w,\"load\":\"$(load)\"}"
            done
        done
    done
}

PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1)

# pgbench of the service's own SQL (bench/pgbench/<script>) on one tenant's
# carts; answers tps. The server is stopped meanwhile (max_connections).
own_sql() { # tenant clients script
    q -c "DROP TABLE IF EXISTS bench_ids; CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL);
          INSERT INTO bench_ids SELECT row_number() OVER (ORDER BY id), id FROM carts WHERE tenant = '$1'; ANALYZE bench_ids"
    "$PGBENCH" -n -M prepared -c "$2" -j 2 -T "$DURATION" -f "bench/pgbench/$3" -D tenant="$1" -D ncarts="$CARTS" \
        -D nskus="${LINES[$1]}" "$DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
}

ratio_step() {
    seed_tenants
    declare -A sum=()
    for r in $(seq 1 "$ROUNDS"); do
        for c in $CONCURRENCY; do
            for s in add-items get-cart; do
                [ -n "$SERVER_PID" ] || start_server CART_API_KEYS="$KEYS"
                for t in small large; do
                    rate=$(bench --scenario "$s" --api-key "${KEY[$t]}" --no-seed --carts "$CARTS" --skus "${LINES[$t]}" \
                        --concurrency "$c" --duration "${DURATION}s" --label "ratio $t round $r" |
                        tee >(sed -n '/^JSON/!p' >&2) | rate_of)
                    sum[$s.$c.$t]=$(python3 -c "print(${sum[$s.$c.$t]:-0} + $rate)")
                    declare "r_$t=$rate"
                done
                stop_server
                for t in small large; do
                    tps=$(own_sql "$t" "$c" "${s//-/_}.sql")
                    sum[pg.$s.$c.$t]=$(python3 -c "print(${sum[pg.$s.$c.$t]:-0} + $tps)")
                    declare "p_$t=$tps"
                done
                # shellcheck disable=SC2154
                ratio=$(python3 -c "print(f'{$r_large/$r_small:.2f}')")
                # shellcheck disable=SC2154
                pg_ratio=$(python3 -c "print(f'{$p_large/$p_small:.2f}')")
                echo "RESULT ratio round $r $s c=$c: ${LARGE}-line ${r_large}/s vs ${SMALL}-line ${r_small}/s = ${ratio}x; pgbench of its own SQL ${p_large} vs ${p_small} tps = ${pg_ratio}x  (load $(load))"
                json "{\"step\":\"ratio\",\"scenario\":\"$s\",\"round\":$r,\"clients\":$c,\"small\":$r_small,\"large\":$r_large,\"ratio\":$ratio,\"pg_small\":$p_small,\"pg_large\":$p_large,\"pg_ratio\":$pg_ratio,\"load\":\"$(load)\"}"
            done
        done
    done
    for c in $CONCURRENCY; do
        for s in add-items get-cart; do
            echo "RESULT ratio mean of $ROUNDS rounds $s c=$c: $(python3 -c "l,s=${sum[$s.$c.large]},${sum[$s.$c.small]}; pl,ps=${sum[pg.$s.$c.large]},${sum[pg.$s.$c.small]}; print(f'service {l/$ROUNDS:.0f}/s vs {s/$ROUNDS:.0f}/s = {l/s:.2f}x; own SQL {pl/$ROUNDS:.0f} vs {ps/$ROUNDS:.0f} tps = {pl/ps:.2f}x')")"
        done
    done
}

# Row counts every 10 s while the steady load runs (t from its start).
counts() {
    local t0=$SECONDS
    while :; do
        sleep 10
        echo "COUNTS t=$((SECONDS - t0)) $(q -c "SELECT json_build_object(
            'cart_events', (SELECT count(*) FROM cart_events), 'carts', (SELECT count(*) FROM carts),
            'idempotency_keys', (SELECT count(*) FROM idempotency_keys),
            'callback_deliveries', (SELECT count(*) FROM callback_deliveries),
            'cart_lines', (SELECT count(*) FROM cart_lines),
            'cart_lines_ended', (SELECT count(*) FROM cart_lines WHERE valid_to IS NOT NULL),
            'cart_heads', (SELECT count(*) FROM cart_heads))") load $(load)"
    done
}

steady_run() { # label event-retention cart-retention
    local label=$1
    stop_server
    seeded=
    fresh_db
    start_server CART_EVENT_RETENTION="$2" CART_RETENTION="$3" CART_CHECKOUT_TIMEOUT=10s
    bench --scenario seed --carts 1000 --seed-items "$SMALL" --distinct-lines --skus "$SMALL" --concurrency 16 \
        --label "steady seed" | sed '/^JSON/d'
    q -c 'VACUUM ANALYZE'
    if [ -z "$STEADY_RATE" ]; then
        peak=$(bench --scenario add-items --no-seed --carts 1000 --skus "$SMALL" --concurrency 64 --duration 10s --label "steady peak" |
            tee >(sed -n '/^JSON/!p' >&2) | rate_of)
        STEADY_RATE=$(python3 -c "print(round($peak / 2))")
        echo "== add-items peak ${peak}/s at 64 clients: steady runs at ${STEADY_RATE}/s"
    fi
    local log=target/bench/steady-$label.log
    counts | tee "$log" &
    COUNTS_PID=$!
    bench --scenario steady --no-seed --carts 1000 --skus "$SMALL" --rate "$STEADY_RATE" --concurrency 16 \
        --lifecycle-rate "$LIFECYCLE_RATE" --duration "${STEADY_DURATION}s" --warmup 20s --sample-every 10s \
        --label "steady $label" | tee target/bench/steady-$label.out | sed '/^JSON/d'
    sleep 1
    kill "$COUNTS_PID" 2>/dev/null || true
    wait "$COUNTS_PID" 2>/dev/null || true
    COUNTS_PID=
    summary=$(python3 - "$log" "$label" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("COUNTS t="):
        t = int(line.split()[1][2:])
        rows.append((t, json.loads(line.split(" ", 2)[2].rsplit(" load ", 1)[0])))
after = [(t, c) for t, c in rows if t > 20]
out = {"step": "steady-counts", "label": sys.argv[2], "samples": len(after), "tables": {}}
for table in ["cart_events", "carts", "idempotency_keys", "callback_deliveries", "cart_lines", "cart_lines_ended",
              "cart_heads"]:
    v = [c[table] for _, c in after]
    if len(v) < 3:
        continue
    k = max(1, len(v) // 3)
    first, last = sum(v[:k]) / k, sum(v[-k:]) / k
    growth = last / first if first else float("inf") if last else 1.0
    flat = growth <= 1.10
    out["tables"][table] = {"min": min(v), "max": max(v), "first_third": first, "last_third": last,
                            "growth": round(growth, 3), "flat": flat}
    print(f"RESULT steady {sys.argv[2]} {table}: after 20 s min {min(v)} max {max(v)}, "
          f"mean of the first third {first:.0f} -> last third {last:.0f} = {growth:.2f}x: "
          f"{'flat' if flat else 'GROWS'}")
print("JSONL " + json.dumps(out))
PY
    )
    echo "$summary" | sed '/^JSONL /d'
    echo "$summary" | sed -n 's/^JSONL //p' >>"$OUT"
    sed -n 's/^JSON //p' target/bench/steady-$label.out | python3 -c 'import json,sys
d=json.load(sys.stdin)["result"]["ops"]["add-items"]
print(d["p99_ms"])' >target/bench/steady-$label.p99
}

steady_step() {
    steady_run no-retention 7d 90d
    steady_run retention "$RETENTION" "$RETENTION"
    a=$(cat target/bench/steady-no-retention.p99) b=$(cat target/bench/steady-retention.p99)
    ratio=$(python3 -c "print(f'{$b/$a:.2f}')")
    echo "RESULT steady add-items p99 at ${STEADY_RATE}/s: with retention $RETENTION ${b} ms vs without ${a} ms = ${ratio}x  (load $(load))"
    json "{\"step\":\"steady\",\"rate\":$STEADY_RATE,\"lifecycle_rate\":$LIFECYCLE_RATE,\"p99_retention_ms\":$b,\"p99_none_ms\":$a,\"ratio\":$ratio,\"load\":\"$(load)\"}"
}

for step in $STEPS; do
    case $step in
    wal) wal_step ;;
    ratio) ratio_step ;;
    steady) steady_step ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
