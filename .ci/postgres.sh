#!/usr/bin/env bash
# Start or stop a throw-away PostgreSQL 15 cluster for tests.
#   eval "$(.ci/postgres.sh start)"   # exports HASHWATCH_TEST_PG_URL and HASHWATCH_TEST_PG_DIR
#   .ci/postgres.sh stop "$HASHWATCH_TEST_PG_DIR"          # stops and deletes it
#   .ci/postgres.sh start DIR / stop DIR --keep            # a cluster kept in DIR (benchmarks)
#   .ci/postgres.sh restart DIR [fast|immediate]           # same port (fault tests)
# The cluster lives under /tmp, listens on 127.0.0.1 on a free port (and a unix socket in its
# own directory), uses a random password, and runs without fsync (it is thrown away).
# As root (CI), the server runs as the `postgres` user if present, else as `hwpg` (created).
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-start}

as_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

pick_user() {
    if [ "$(id -u)" != 0 ]; then PGUSER_OS=$(id -un); return; fi
    if id postgres >/dev/null 2>&1; then PGUSER_OS=postgres; return; fi
    id hwpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin hwpg
    PGUSER_OS=hwpg
}

case "$cmd" in
start)
    [ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL 15 at $PGBIN (apt-get install postgresql-15)" >&2; exit 3; }
    pick_user
    dir=${2:-$(mktemp -d /tmp/hashwatch-pg.XXXXXX)}
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ "$(id -u)" = 0 ] && chown "$PGUSER_OS" "$dir"
    if [ -f "$dir/url" ] && as_user "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "export HASHWATCH_TEST_PG_URL='$(cat "$dir/url")'"  # already running
        echo "export HASHWATCH_TEST_PG_DIR='$dir'"
        exit 0
    fi
    if [ -f "$dir/data/PG_VERSION" ]; then  # an existing cluster (e.g. a benchmark DB): reuse
        password=$(cat "$dir/pwfile")
    else
        password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
        printf '%s\n' "$password" > "$dir/pwfile"
        [ "$(id -u)" = 0 ] && chown "$PGUSER_OS" "$dir/pwfile"
        chmod 600 "$dir/pwfile"
        as_user "$PGBIN/initdb" -D "$dir/data" -U hw --pwfile="$dir/pwfile" -A scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # throw-away: no fsync. HASHWATCH_PG_DURABLE=1 keeps PostgreSQL's defaults (benchmarks).
    opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
    [ "${HASHWATCH_PG_DURABLE:-0}" = 1 ] \
        || opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    as_user "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    url="postgresql+psycopg://hw:$password@127.0.0.1:$port/postgres"
    printf '%s\n' "$url" > "$dir/url"
    chmod 600 "$dir/url"
    echo "export HASHWATCH_TEST_PG_URL='$url'"
    echo "export HASHWATCH_TEST_PG_DIR='$dir'"
    ;;
restart)  # same port and options (fault tests: a server restart under load)
    dir=${2:-${HASHWATCH_TEST_PG_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "usage: $0 restart DIR" >&2; exit 2; }
    pick_user
    as_user "$PGBIN/pg_ctl" -D "$dir/data" -m "${3:-fast}" -w -t 60 restart >/dev/null
    ;;
stop)
    dir=${2:-${HASHWATCH_TEST_PG_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "usage: $0 stop DIR [--keep]" >&2; exit 2; }
    pick_user
    if [ "${3:-}" = --keep ]; then  # stop cleanly, keep the data
        as_user "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    else
        as_user "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    fi
    ;;
*)
    echo "usage: $0 start [DIR] | restart DIR [fast|immediate] | stop DIR" >&2; exit 2 ;;
esac
