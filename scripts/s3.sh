#!/usr/bin/env bash
# Run a real S3-compatible object store on loopback: SeaweedFS (Apache-2.0), built once from
# the Go module proxy, with its S3 gateway. The data lake's real home (pipelines.land and
# pipelines.curate with --lake s3://streamml/..., through Beam's S3 file system).
#
#   bash scripts/s3.sh install   build SeaweedFS once (scripts/setup.sh does)
#   bash scripts/s3.sh start     build if needed, start, wait until S3 answers, create the bucket
#   bash scripts/s3.sh stop      stop (data kept in .run/s3/data)
#   bash scripts/s3.sh status    exit 0 if it runs and answers
#   bash scripts/s3.sh env       the variables a client needs (eval "$(bash scripts/s3.sh env)")
#   bash scripts/s3.sh reset     stop + delete the data and the credentials
#   bash scripts/s3.sh logs      tail its log
#
# MinIO, which the issue names, is AGPL-licensed: this project keeps to permissive licences.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HOST=127.0.0.1
S3_PORT=${S3_PORT:-19000}
S3_BUCKET=${S3_BUCKET:-streamml}
S3_START_TIMEOUT=${S3_START_TIMEOUT:-60}
SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs@v0.0.0-20261109003541-7506e5f91cd6  # 4.53
BIN=$ROOT/.cache/seaweedfs/weed
RUN_DIR=$ROOT/.run/s3
PID_FILE=$RUN_DIR/weed.pid
LOG_FILE=$RUN_DIR/weed.log
CREDENTIALS=$RUN_DIR/credentials.env
LOCK_WAIT_S=900
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, pid_running, port_open, stop_process

usage() {
  cat <<USAGE
Usage: bash scripts/s3.sh install|start|stop|status|env|reset|logs

Runs SeaweedFS (master, volume, filer and S3 gateway in one process) with its S3 API on
$HOST:\$S3_PORT (default $S3_PORT) and its other ports at $((S3_PORT + 10333))-$((S3_PORT + 10335)) and
+10000 of each, all on loopback; data, log and credentials in .run/s3/. The access key and
secret are drawn at the first start (never in the repository) and kept in
.run/s3/credentials.env. Creates the bucket \$S3_BUCKET (default $S3_BUCKET). Prints
S3_ENDPOINT_URL=http://$HOST:PORT when started.

Environment: S3_PORT [$S3_PORT], S3_BUCKET [$S3_BUCKET], S3_START_TIMEOUT seconds [$S3_START_TIMEOUT]
USAGE
}

endpoint() { echo "http://$HOST:$S3_PORT"; }
server_pid() { pid_running "$PID_FILE" weed server "-s3.port=$S3_PORT"; }

install() {
  [[ -x $BIN && $(cat "$BIN.version" 2>/dev/null) == "$SEAWEEDFS_MODULE" ]] && return 0
  PATH="$PATH:/usr/local/go/bin"
  need go "Go builds SeaweedFS from the Go module proxy"
  log "building SeaweedFS ($SEAWEEDFS_MODULE) from the Go module proxy (a few minutes, once)"
  local dir src=$ROOT/.cache/seaweedfs/src
  dir=$(go mod download -json "$SEAWEEDFS_MODULE" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -n $dir && -d $dir/weed ]] || die "could not download $SEAWEEDFS_MODULE"
  # Its go.mod has replace directives, so it builds as the main module, from a writable copy.
  rm -rf "$src" && mkdir -p "$src" && cp -R "$dir/." "$src/" && chmod -R u+w "$src"
  (cd "$src" && go build -o "$BIN.new" ./weed) || die "go build of SeaweedFS failed"
  mv -f "$BIN.new" "$BIN"
  echo "$SEAWEEDFS_MODULE" >"$BIN.version"
  rm -rf "$src"
}

credentials() {
  [[ -f $CREDENTIALS ]] && return 0
  local key secret
  key=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')
  secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$key" "$secret" >"$CREDENTIALS")
}

# shellcheck disable=SC1090
load_credentials() { source "$CREDENTIALS"; }

answers() { [[ $(curl -s -o /dev/null -w '%{http_code}' "$(endpoint)/" 2>/dev/null) =~ ^[234] ]]; }

signed() {  # signed METHOD PATH: an S3 request signed with the credentials (SigV4)
  load_credentials
  curl -s -o /dev/null -w '%{http_code}' -X "$1" --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$(endpoint)$2"
}

cmd_start() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  install
  credentials
  if [[ -n $(server_pid) ]] && answers; then
    log "already running (pid $(server_pid))"
  else
    port_open "$HOST" "$S3_PORT" && die "port $HOST:$S3_PORT is in use by another process (set S3_PORT)"
    load_credentials
    (umask 077 && printf '{"identities": [{"name": "streamml", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
      "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$RUN_DIR/identities.json")
    mkdir -p "$RUN_DIR/data"
    : >"$LOG_FILE"
    # One process for the whole store; small volumes (a lake of tests, not of petabytes);
    # no Iceberg or Lance endpoints (unused ports).
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
      "$BIN" server -dir="$RUN_DIR/data" -ip="$HOST" -ip.bind="$HOST" \
      -master.port=$((S3_PORT + 10333)) -volume.port=$((S3_PORT + 10334)) -filer -filer.port=$((S3_PORT + 10335)) \
      -s3 -s3.port="$S3_PORT" -s3.config="$RUN_DIR/identities.json" -s3.port.iceberg=0 -s3.port.lance=0 \
      -master.volumeSizeLimitMB=64 -volume.max=16 -volume.preStopSeconds=0 </dev/null >>"$LOG_FILE" 2>&1 7>&- 8>&- 9>&- &
    sleep 0.2
    local deadline=$((SECONDS + S3_START_TIMEOUT))
    until answers && [[ $(signed GET /) == 200 ]]; do
      [[ -n $(server_pid) ]] || { tail -n 20 "$LOG_FILE" >&2; die "SeaweedFS exited"; }
      ((SECONDS < deadline)) || { tail -n 20 "$LOG_FILE" >&2; die "S3 did not answer within ${S3_START_TIMEOUT} s"; }
      sleep 0.5
    done
    log "started (pid $(server_pid)) on $(endpoint)"
  fi
  local code
  code=$(signed PUT "/$S3_BUCKET")
  [[ $code == 200 || $code == 409 ]] || die "could not create bucket $S3_BUCKET (HTTP $code)"
  echo "S3_ENDPOINT_URL=$(endpoint)"
  echo "S3_BUCKET=$S3_BUCKET"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  local pid
  pid=$(server_pid)
  [[ -n $pid ]] || { log "not running"; rm -f "$PID_FILE"; return 0; }
  stop_process "$pid" 15
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_env() {
  [[ -f $CREDENTIALS ]] || die "no credentials yet: bash scripts/s3.sh start"
  load_credentials
  echo "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" \
    "AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL_S3=$(endpoint)"
}

cmd_status() {
  if [[ -n $(server_pid) ]] && answers; then
    echo "s3: running (pid $(server_pid)) S3_ENDPOINT_URL=$(endpoint)"
    return 0
  fi
  echo "s3: not running"
  return 1
}

case "${1:-}" in
  install) mkdir -p "$RUN_DIR"; lock "$RUN_DIR/.lock" 9; install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  reset) cmd_stop; rm -rf "$RUN_DIR/data" "$CREDENTIALS" "$RUN_DIR/identities.json" ;;
  logs) tail -n "${2:-100}" "$LOG_FILE" ;;
  -h | --help | help) usage ;;
  "") usage; exit 2 ;;
  *) usage >&2; die "unknown command '$1'" ;;
esac
