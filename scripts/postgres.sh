#!/usr/bin/env bash
# Run a real PostgreSQL server on loopback (Debian's postgresql package, installed if
# missing): the model registry that several serving processes and the learning plane share
# (stores/registry.py, postgresql://streamml@127.0.0.1:15432/streamml).
#
#   bash scripts/postgres.sh start     install if needed, create the cluster once, start, wait until ready
#   bash scripts/postgres.sh stop      fast shutdown (data kept)
#   bash scripts/postgres.sh status    exit 0 if it runs and answers
#   bash scripts/postgres.sh restart   stop + start
#   bash scripts/postgres.sh reset     stop + delete the data (next start creates it anew)
#   bash scripts/postgres.sh logs      tail its log
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HOST=127.0.0.1
POSTGRES_PORT=${POSTGRES_PORT:-15432}
POSTGRES_START_TIMEOUT=${POSTGRES_START_TIMEOUT:-60}
RUN_DIR=$ROOT/.run/postgres
DATA_DIR=$RUN_DIR/data
LOG_FILE=$RUN_DIR/postgres.log
DB_USER=streamml
DB_NAME=streamml
LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, port_open, apt_install

usage() {
  cat <<USAGE
Usage: bash scripts/postgres.sh start|stop|status|restart|reset|logs

Runs PostgreSQL (Debian's package) on $HOST:\$POSTGRES_PORT (default $POSTGRES_PORT), as the
system user 'postgres', data and log in .run/postgres/. Database and role '$DB_USER', trusted
on loopback only (no password: a local development server, reachable from this machine only).
Prints POSTGRES_URL=postgresql://$DB_USER@$HOST:PORT/$DB_NAME when started.

Environment: POSTGRES_PORT [$POSTGRES_PORT], POSTGRES_START_TIMEOUT seconds [$POSTGRES_START_TIMEOUT]
USAGE
}

bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/pg_ctl ]] || die "PostgreSQL's programs are not in /usr/lib/postgresql/*/bin"
  echo "$dir"
}

as_postgres() { runuser -u postgres -- "$@"; }

url() { echo "postgresql://$DB_USER@$HOST:$POSTGRES_PORT/$DB_NAME"; }

answers() { "$(bin_dir)/pg_isready" -q -h "$HOST" -p "$POSTGRES_PORT" -d "$DB_NAME" -U "$DB_USER" 2>/dev/null; }

running() { [[ -f $DATA_DIR/postmaster.pid ]] && as_postgres "$(bin_dir)/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; }

cmd_start() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  apt_install postgresql
  local bin
  bin=$(bin_dir)
  id postgres >/dev/null 2>&1 || die "no system user 'postgres' (Debian's postgresql package creates it)"
  chown postgres:postgres "$RUN_DIR"
  if running && answers; then
    log "already running"
    url | sed 's/^/POSTGRES_URL=/'
    return 0
  fi
  if [[ ! -f $DATA_DIR/PG_VERSION ]]; then
    rm -rf "$DATA_DIR"
    log "creating the cluster in ${DATA_DIR#"$ROOT"/} ..."
    as_postgres "$bin/initdb" -D "$DATA_DIR" --username="$DB_USER" --auth=trust --encoding=UTF8 \
      --locale=C >"$RUN_DIR/initdb.log" 2>&1 || { tail -n 20 "$RUN_DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  port_open "$HOST" "$POSTGRES_PORT" && die "port $HOST:$POSTGRES_PORT is in use by another process (set POSTGRES_PORT)"
  touch "$LOG_FILE" && chown postgres:postgres "$LOG_FILE"
  # Loopback only; its socket in the run folder (not /var/run, which a fresh machine may lack).
  as_postgres "$bin/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$POSTGRES_START_TIMEOUT" \
    -o "-p $POSTGRES_PORT -c listen_addresses=$HOST -c unix_socket_directories=$RUN_DIR" \
    start </dev/null >/dev/null 2>&1 7>&- 8>&- 9>&- || { tail -n 20 "$LOG_FILE" >&2; die "PostgreSQL did not start"; }
  if ! "$bin/psql" -h "$HOST" -p "$POSTGRES_PORT" -U "$DB_USER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    "$bin/createdb" -h "$HOST" -p "$POSTGRES_PORT" -U "$DB_USER" "$DB_NAME"
  fi
  log "started on $HOST:$POSTGRES_PORT"
  url | sed 's/^/POSTGRES_URL=/'
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  running || { log "not running"; return 0; }
  as_postgres "$(bin_dir)/pg_ctl" -D "$DATA_DIR" -m fast -w stop >/dev/null
  log "stopped"
}

cmd_status() {
  if running && answers; then
    echo "postgres: running POSTGRES_URL=$(url)"
    return 0
  fi
  echo "postgres: not running"
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  reset) cmd_stop; rm -rf "$DATA_DIR"; log "data deleted" ;;
  logs) tail -n "${2:-100}" "$LOG_FILE" ;;
  -h | --help | help) usage ;;
  "") usage; exit 2 ;;
  *) usage >&2; die "unknown command '$1'" ;;
esac
