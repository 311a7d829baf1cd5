#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on loopback, for the tests and CI. No Docker, no download other than
# Maven Central: the broker's jars come from there through `mvn`.
#
#   bash scripts/kafka.sh install   fetch the jars into .cache/kafka/libs (once)
#   bash scripts/kafka.sh start     install if needed, format once, start, wait until ready
#   bash scripts/kafka.sh stop      SIGTERM, wait up to 30 s, then SIGKILL
#   bash scripts/kafka.sh status    exit 0 if the broker runs and answers
#   bash scripts/kafka.sh restart   stop + start, data kept
#   bash scripts/kafka.sh reset     stop + delete the data (next start formats anew)
#   bash scripts/kafka.sh logs      tail the broker log
#
# Run `bash scripts/kafka.sh --help` for the environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# ---- pinned versions -------------------------------------------------------
KAFKA_VERSION=4.4.0            # org.apache.kafka:kafka_2.13
SCALA_BINARY=2.13
LOG4J_VERSION=2.25.5           # the log4j2 that kafka-server 4.4.0 itself declares
DEP_PLUGIN_VERSION=3.6.1       # maven-dependency-plugin

# ---- settings (environment) ------------------------------------------------
HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}
KAFKA_EXTRA_PROPERTIES=${KAFKA_EXTRA_PROPERTIES:-}

CACHE_DIR=$ROOT/.cache/kafka
LIBS_DIR=$CACHE_DIR/libs
STAMP=$CACHE_DIR/installed.txt
STAMP_WANT="kafka_${SCALA_BINARY}:${KAFKA_VERSION} log4j:${LOG4J_VERSION}"
LOG4J_CONF=$CACHE_DIR/log4j2.xml
TOOLS_LOG4J_CONF=$CACHE_DIR/tools-log4j2.xml

RUN_DIR=$ROOT/.run/kafka
DATA_DIR=$RUN_DIR/data
PID_FILE=$RUN_DIR/kafka.pid
PROPS=$RUN_DIR/server.properties
CLUSTER_ID_FILE=$RUN_DIR/cluster.id
SERVER_LOG=$RUN_DIR/server.log
STDOUT_LOG=$RUN_DIR/stdout.log
CLIENT_PROPS=$RUN_DIR/admin-client.properties

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA=$JAVA_HOME/bin/java
else
  JAVA=java
fi

LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, pom_build, pid_running, port_open, stop_process

usage() {
  cat <<EOF
Usage: bash scripts/kafka.sh COMMAND

Runs a real single-node Apache Kafka ${KAFKA_VERSION} broker (KRaft mode) on ${HOST}.

Commands:
  install   fetch kafka_${SCALA_BINARY}:${KAFKA_VERSION} + log4j ${LOG4J_VERSION} from Maven Central
            into .cache/kafka/libs (skipped when already there)
  start     install if needed, write server.properties, format storage once,
            start the broker in the background and wait until its admin API
            answers; prints KAFKA_BOOTSTRAP=${HOST}:<port>. Returns at once if
            the broker already runs.
  stop      stop the broker (SIGTERM, up to ${KAFKA_STOP_TIMEOUT} s, then SIGKILL)
  status    exit 0 if the broker runs and answers, 1 otherwise
  restart   stop then start; the data is kept
  reset     stop and delete the data (the next start formats a new cluster)
  logs      print the last lines of the broker log (.run/kafka/server.log)

Environment:
  KAFKA_PORT              client (PLAINTEXT) port      [${KAFKA_PORT}]
  KAFKA_CONTROLLER_PORT   KRaft controller port        [${KAFKA_CONTROLLER_PORT}]
  KAFKA_START_TIMEOUT     seconds to wait for ready    [${KAFKA_START_TIMEOUT}]
  KAFKA_STOP_TIMEOUT      seconds before SIGKILL       [${KAFKA_STOP_TIMEOUT}]
  KAFKA_HEAP_OPTS         JVM heap options             [${KAFKA_HEAP_OPTS}]
  KAFKA_EXTRA_PROPERTIES  extra server.properties lines (newline-separated),
                          appended last so they override the defaults
  JAVA_HOME               Java 17+ to use (else 'java' on PATH)

Files: jars in .cache/kafka/, data, pid, config and logs in .run/kafka/.
EOF
}

# ---- helpers ---------------------------------------------------------------

# Pid of OUR broker (from the pid file, alive, and really kafka.Kafka with
# our server.properties), or nothing.
broker_pid() { pid_running "$PID_FILE" kafka.Kafka "$PROPS"; }

# A value from the current server.properties ('' when absent).
prop() {
  [[ -f $PROPS ]] || return 0
  sed -n "s/^$1=//p" "$PROPS" | tail -n 1
}

# The port the running broker was started with (from its server.properties).
running_port() {
  local l
  l=$(prop listeners)
  l=${l#*PLAINTEXT://}
  l=${l%%,*}
  echo "${l##*:}"
}

installed() {
  [[ -f $STAMP && "$(cat "$STAMP")" == "$STAMP_WANT" ]] &&
    compgen -G "$LIBS_DIR/kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" >/dev/null &&
    [[ -f $LOG4J_CONF && -f $TOOLS_LOG4J_CONF ]]
}

# ---- install ----------------------------------------------------------------
write_log4j_configs() {
  # Broker: INFO and above to ${kafka.logs.dir}/server.log (the start command
  # sets -Dkafka.logs.dir=.run/kafka). Rolled at 100 MB, 3 files kept.
  cat >"$LOG4J_CONF.tmp" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh: the test broker's logging. -->
<Configuration status="WARN" name="kafka-test-broker">
  <Properties>
    <Property name="logDir">${sys:kafka.logs.dir:-.}</Property>
    <Property name="pattern">[%d] %p %m (%c)%n</Property>
  </Properties>
  <Appenders>
    <RollingFile name="server" fileName="${logDir}/server.log"
                 filePattern="${logDir}/server.log.%i" append="true">
      <PatternLayout pattern="${pattern}"/>
      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="WARN"/>
    <Root level="INFO">
      <AppenderRef ref="server"/>
    </Root>
  </Loggers>
</Configuration>
EOF
  mv -f "$LOG4J_CONF.tmp" "$LOG4J_CONF"
  # Command-line tools (StorageTool, TopicCommand): WARN and above to stderr.
  cat >"$TOOLS_LOG4J_CONF.tmp" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh: logging of the Kafka command-line tools. -->
<Configuration status="WARN" name="kafka-tools">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN">
      <AppenderRef ref="stderr"/>
    </Root>
  </Loggers>
</Configuration>
EOF
  mv -f "$TOOLS_LOG4J_CONF.tmp" "$TOOLS_LOG4J_CONF"
}

write_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh: only used to fetch the broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.test</groupId>
  <artifactId>kafka-test-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- The broker (kafka.Kafka, kafka.tools.StorageTool). -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_BINARY}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <!-- org.apache.kafka.tools.TopicCommand: readiness probe when the Python
         confluent_kafka package is not available. Kafka Connect is not needed. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${KAFKA_VERSION}</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <!-- Logging backend: not in kafka's POM. Kafka ${KAFKA_VERSION} logs through
         slf4j 1.7.x, so the binding is log4j-slf4j-impl (not the slf4j2 one). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
$(pom_build)
</project>
EOF
}

cmd_install() {
  if installed; then
    log "Kafka ${KAFKA_VERSION} already installed in ${LIBS_DIR#"$ROOT"/}"
    return 0
  fi
  need mvn "Maven is needed to fetch the Kafka jars from Maven Central"
  need "$JAVA" "Java 17+ is needed to run Kafka"
  mkdir -p "$CACHE_DIR"
  lock "$CACHE_DIR/.install.lock" 8
  if installed; then # another process installed it while we waited
    log "Kafka ${KAFKA_VERSION} already installed in ${LIBS_DIR#"$ROOT"/}"
    return 0
  fi
  log "installing Kafka ${KAFKA_VERSION} (kafka_${SCALA_BINARY}) + log4j ${LOG4J_VERSION} from Maven Central ..."
  local t0=$SECONDS tmp="$CACHE_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  write_pom "$CACHE_DIR/pom.xml"
  if ! mvn -B -q -Dstyle.color=never -f "$CACHE_DIR/pom.xml" \
      dependency:copy-dependencies \
      -DincludeScope=runtime \
      -DoutputDirectory="$tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
    tail -n 40 "$CACHE_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch the Kafka jars (full output: ${CACHE_DIR#"$ROOT"/}/mvn.log)"
  fi
  [[ -f "$tmp/kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" ]] ||
    { rm -rf "$tmp"; die "mvn finished but kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar is missing"; }
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  write_log4j_configs
  printf '%s\n' "$STAMP_WANT" >"$STAMP"
  log "installed $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $((SECONDS - t0)) s"
}

# ---- readiness probe ---------------------------------------------------------
PROBE=""      # "python:<interpreter>" or "java"
pick_probe() {
  [[ -n $PROBE ]] && return 0
  local py
  for py in "$ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import confluent_kafka' >/dev/null 2>&1; then
      PROBE="python:$py"
      return 0
    fi
  done
  PROBE=java
}

# One readiness check, at most $2 seconds (default 10): the admin API answers
# a metadata request that lists at least one broker.
probe_once() {
  local bootstrap="$HOST:$1" secs=${2:-10}
  pick_probe
  if [[ $PROBE == python:* ]]; then
    timeout -k 2 "$((secs + 2))" "${PROBE#python:}" - "$bootstrap" "$secs" >/dev/null 2>&1 <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "socket.timeout.ms": 3000, "log_level": 0})
md = admin.list_topics(timeout=min(5.0, float(sys.argv[2])))
sys.exit(0 if md.brokers else 1)
EOF
  else
    printf 'request.timeout.ms=3000\ndefault.api.timeout.ms=5000\nsocket.connection.setup.timeout.ms=1000\nsocket.connection.setup.timeout.max.ms=2000\n' >"$CLIENT_PROPS"
    timeout -k 2 "$((secs + 5))" "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
      -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONF" -cp "$LIBS_DIR/*" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
      --command-config "$CLIENT_PROPS" --list >/dev/null 2>&1
  fi
}

# Wait until the broker answers; fail (with the log tail) if it dies or times out.
wait_ready() {
  local pid=$1 port=$2 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  pick_probe
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      rm -f "$PID_FILE"
      die "the broker (pid $pid) exited during startup; see ${SERVER_LOG#"$ROOT"/} and ${STDOUT_LOG#"$ROOT"/}"
    fi
    if probe_once "$port" "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail
      log "the broker (pid $pid) did not answer on $HOST:$port within ${KAFKA_START_TIMEOUT} s (probe: $PROBE): stopping it"
      stop_pid "$pid"
      die "the broker did not become ready; see ${SERVER_LOG#"$ROOT"/}"
    fi
    sleep 0.5
  done
}

show_log_tail() {
  local f
  for f in "$STDOUT_LOG" "$SERVER_LOG"; do
    [[ -s $f ]] || continue
    printf -- '---- last lines of %s ----\n' "${f#"$ROOT"/}" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# ---- start ------------------------------------------------------------------
write_server_properties() {
  cat >"$PROPS.tmp" <<EOF
# Written by scripts/kafka.sh on each start: single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=${HOST}:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://${HOST}:${KAFKA_PORT},CONTROLLER://${HOST}:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${HOST}:${KAFKA_PORT},CONTROLLER://${HOST}:${KAFKA_CONTROLLER_PORT}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${DATA_DIR}
# Keep every record: tests and replays carry historical event times as Kafka timestamps,
# which time-based retention would delete within minutes of startup.
log.retention.ms=-1
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a hard kill the old registration blocks the new one until the session
# expires (default 9 s): a shorter session makes a start after a crash quicker.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  if [[ -n $KAFKA_EXTRA_PROPERTIES ]]; then
    printf '# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$PROPS.tmp"
  fi
  mv -f "$PROPS.tmp" "$PROPS"
}

format_storage_once() {
  [[ -f $DATA_DIR/meta.properties ]] && return 0
  local cid
  if [[ -s $CLUSTER_ID_FILE ]]; then
    cid=$(cat "$CLUSTER_ID_FILE")
  else
    cid=$("$JAVA" -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONF" -cp "$LIBS_DIR/*" \
      kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1) ||
      die "kafka.tools.StorageTool random-uuid failed"
    [[ $cid =~ ^[A-Za-z0-9_-]{22}$ ]] || die "unexpected cluster id from StorageTool: '$cid'"
    printf '%s\n' "$cid" >"$CLUSTER_ID_FILE"
  fi
  log "formatting ${DATA_DIR#"$ROOT"/} (cluster id $cid)"
  mkdir -p "$DATA_DIR"
  local out
  if ! out=$("$JAVA" -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONF" -cp "$LIBS_DIR/*" \
      kafka.tools.StorageTool format --standalone -t "$cid" -c "$PROPS" 2>&1); then
    printf '%s\n' "$out" >&2
    die "formatting the storage failed"
  fi
  printf '%s\n' "$out" >"$RUN_DIR/format.log"
}

cmd_start() {
  cmd_install
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9

  local pid
  pid=$(broker_pid)
  if [[ -n $pid ]]; then
    local port
    port=$(running_port)
    if [[ $port != "$KAFKA_PORT" ]]; then
      die "a broker (pid $pid) already runs here on port $port, not $KAFKA_PORT; run 'stop' first"
    fi
    wait_ready "$pid" "$port"
    log "already running (pid $pid)"
    echo "KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT"
    return 0
  fi
  rm -f "$PID_FILE"

  [[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$HOST" "$p"; then
      die "port $HOST:$p is already in use by another process (another Kafka? set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
    fi
  done

  write_server_properties
  format_storage_once

  : >"$STDOUT_LOG"
  local t0=$SECONDS
  # Detached: nohup, and its own session (setsid, when there) so a Ctrl-C in
  # the terminal that ran `start` does not reach it. setsid does not fork
  # here (a background child is no group leader), so $! is the JVM's pid.
  # fds 8/9 hold our locks: the broker must not inherit them.
  local setsid=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS holds several options
  nohup ${setsid[@]+"${setsid[@]}"} "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dkafka.logs.dir="$RUN_DIR" \
    -Dlog4j2.configurationFile="$LOG4J_CONF" \
    -cp "$LIBS_DIR/*" \
    kafka.Kafka "$PROPS" >>"$STDOUT_LOG" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  log "started broker pid $pid, waiting for $HOST:$KAFKA_PORT (up to ${KAFKA_START_TIMEOUT} s) ..."
  wait_ready "$pid" "$KAFKA_PORT"
  log "ready in $((SECONDS - t0)) s (probe: $PROBE)"
  echo "KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT"
}

# ---- stop / status / restart / reset -----------------------------------------------
cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  local pid
  pid=$(broker_pid)
  if [[ -z $pid ]]; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  log "stopping broker pid $pid ..."
  stop_pid "$pid"
  log "stopped"
}

# SIGTERM, wait up to KAFKA_STOP_TIMEOUT s, then SIGKILL; remove the pid file.
stop_pid() {
  stop_process "$1" "$KAFKA_STOP_TIMEOUT"
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid port
  pid=$(broker_pid)
  if [[ -z $pid ]]; then
    echo "kafka: not running"
    return 1
  fi
  port=$(running_port)
  if probe_once "$port"; then
    echo "kafka: running (pid $pid) KAFKA_BOOTSTRAP=$HOST:$port"
    return 0
  fi
  echo "kafka: process $pid alive but not answering on $HOST:$port"
  return 1
}

cmd_reset() {
  cmd_stop
  rm -rf "$DATA_DIR" "$CLUSTER_ID_FILE"
  log "deleted ${DATA_DIR#"$ROOT"/}"
}

cmd_logs() {
  [[ -f $SERVER_LOG ]] || die "no log yet (${SERVER_LOG#"$ROOT"/})"
  tail -n "${1:-100}" "$SERVER_LOG"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    reset) cmd_reset ;;
    logs) shift; cmd_logs "$@" ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
