# Sourced by the test scripts: finds a Postgres for the tests, or starts one,
# and exports TEST_DATABASE_URL (an admin URL whose user may CREATE DATABASE).
#
# Order: TEST_DATABASE_URL if set; a server answering on 127.0.0.1:5432;
# the machine's cluster started with pg_ctlcluster; a throwaway cluster made
# with initdb under target/pg; Debian's postgresql package installed and
# started (root only).

pg_ready() { # host port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 2
    else
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
    fi
}

wait_ready() { # host port
    for _ in $(seq 1 60); do
        pg_ready "$1" "$2" && return 0
        sleep 0.5
    done
    return 1
}

start_machine_cluster() {
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || return 1
    echo "postgres: starting cluster $version/main" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || return 1
    wait_ready 127.0.0.1 5432
}

start_throwaway_cluster() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] && [ -x "$bin/initdb" ] || return 1
    local dir port=55432
    dir="$(pwd)/target/pg"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        run=(runuser -u postgres --)
        mkdir -p "$dir" && chown postgres "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        echo "postgres: creating a throwaway cluster in $dir" >&2
        "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null || return 1
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" -w start >&2 || return 1
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

install_postgres() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    echo "postgres: installing Debian's postgresql" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || return 1
    start_machine_cluster
}

ensure_postgres() {
    if [ -n "${TEST_DATABASE_URL:-}" ]; then
        return 0
    fi
    local url="postgres://postgres@127.0.0.1:5432/postgres"
    if pg_ready 127.0.0.1 5432 || start_machine_cluster; then
        export TEST_DATABASE_URL="$url"
        return 0
    fi
    start_throwaway_cluster && return 0
    install_postgres && export TEST_DATABASE_URL="$url" && return 0
    echo "postgres: none found and none could be started; set TEST_DATABASE_URL" >&2
    return 1
}

# Drops databases left by earlier test runs (each test makes its own).
drop_test_databases() {
    command -v psql >/dev/null 2>&1 || return 0
    psql "$TEST_DATABASE_URL" -Atqc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'cart\_test\_%' OR datname = 'cart_smoke'" 2>/dev/null |
        while read -r db; do
            psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
        done
}
