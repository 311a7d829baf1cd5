#!/usr/bin/env bash
# Run a real Redis server on loopback (Debian's redis-server package, installed if missing):
# the online store that several serving processes and the learning plane share
# (stores/online.py, redis://127.0.0.1:16379/0).
#
#   bash scripts/redis.sh start     install if needed, start, wait until it answers PING
#   bash scripts/redis.sh stop      SHUTDOWN (saves nothing: the store is rebuilt by the learner)
#   bash scripts/redis.sh status    exit 0 if it runs and answers
#   bash scripts/redis.sh restart   stop + start
#   bash scripts/redis.sh logs      tail its log
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HOST=127.0.0.1
REDIS_PORT=${REDIS_PORT:-16379}
REDIS_START_TIMEOUT=${REDIS_START_TIMEOUT:-30}
RUN_DIR=$ROOT/.run/redis
PID_FILE=$RUN_DIR/redis.pid
LOG_FILE=$RUN_DIR/redis.log
LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, pid_running, port_open, stop_process, apt_install

usage() {
  cat <<USAGE
Usage: bash scripts/redis.sh start|stop|status|restart|logs

Runs redis-server on $HOST:\$REDIS_PORT (default $REDIS_PORT), without persistence (the
learning plane rewrites every profile it changes), pid and log in .run/redis/. Prints
REDIS_URL=redis://$HOST:PORT/0 when started.

Environment: REDIS_PORT [$REDIS_PORT], REDIS_START_TIMEOUT seconds [$REDIS_START_TIMEOUT]
USAGE
}

server_pid() { pid_running "$PID_FILE" redis-server "$HOST:$REDIS_PORT"; }
answers() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]]; }

cmd_start() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  apt_install redis-server redis-tools
  if [[ -n $(server_pid) ]] && answers; then
    log "already running (pid $(server_pid))"
  else
    port_open "$HOST" "$REDIS_PORT" && die "port $HOST:$REDIS_PORT is in use by another process (set REDIS_PORT)"
    : >"$LOG_FILE"
    # Loopback only, no disk persistence, no protected-mode surprises on loopback.
    redis-server --bind "$HOST" --port "$REDIS_PORT" --daemonize yes --pidfile "$PID_FILE" \
      --logfile "$LOG_FILE" --dir "$RUN_DIR" --save "" --appendonly no </dev/null >/dev/null 2>&1 7>&- 8>&- 9>&-
    local deadline=$((SECONDS + REDIS_START_TIMEOUT))
    until answers; do
      ((SECONDS < deadline)) || { tail -n 20 "$LOG_FILE" >&2; die "Redis did not answer within ${REDIS_START_TIMEOUT} s"; }
      sleep 0.1
    done
    log "started (pid $(server_pid)) on $HOST:$REDIS_PORT"
  fi
  echo "REDIS_URL=redis://$HOST:$REDIS_PORT/0"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  local pid
  pid=$(server_pid)
  [[ -n $pid ]] || { log "not running"; rm -f "$PID_FILE"; return 0; }
  stop_process "$pid" 10
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  if [[ -n $(server_pid) ]] && answers; then
    echo "redis: running (pid $(server_pid)) REDIS_URL=redis://$HOST:$REDIS_PORT/0"
    return 0
  fi
  echo "redis: not running"
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  logs) tail -n "${2:-100}" "$LOG_FILE" ;;
  -h | --help | help) usage ;;
  "") usage; exit 2 ;;
  *) usage >&2; die "unknown command '$1'" ;;
esac
