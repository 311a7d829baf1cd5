#!/usr/bin/env bash
# Run a real Confluent-compatible schema registry on loopback, for the tests
# and CI: Apicurio Registry 2.4.2.Final (in-memory H2 storage), whose
# Confluent API lives under /apis/ccompat/v7. No Docker, no download other than
# Maven Central: the registry is assembled from its jars there with `mvn` and the
# quarkus-maven-plugin (Apicurio publishes no runnable jar to Central).
#
#   bash scripts/schema_registry.sh install   build the registry into $SCHEMA_REGISTRY_CACHE_DIR (once)
#   bash scripts/schema_registry.sh start     install if needed, start, wait until ready, set the
#                              global compatibility; prints SCHEMA_REGISTRY_URL=...
#   bash scripts/schema_registry.sh stop      SIGTERM, wait up to 30 s, then SIGKILL
#   bash scripts/schema_registry.sh status    exit 0 if the registry runs and answers
#   bash scripts/schema_registry.sh restart   stop + start (storage is in memory: schemas are lost)
#   bash scripts/schema_registry.sh logs      tail the registry log
#
# Run `bash scripts/schema_registry.sh --help` for the environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# ---- pinned versions -------------------------------------------------------
APICURIO_VERSION=2.4.2.Final    # io.apicurio:apicurio-registry-app (newest 2.x whose deps are all on Central)
QUARKUS_VERSION=2.16.4.Final    # the Quarkus that Apicurio 2.4.2.Final is built with
CONFIG_INDEX_VERSION=0.1.10.Final # apicurio-common-app-components-config-index: 0.1.18.Final (what 2.4.2 declares)
                                # has no -deployment artifact on Central; 0.1.10.Final has one
EVERIT_VERSION=1.14.2           # com.github.erosb:everit-json-schema, the Central build of the
                                # everit json-schema that Apicurio takes from another repository
DEP_PLUGIN_VERSION=3.6.1        # maven-dependency-plugin

# ---- settings (environment) ------------------------------------------------
HOST=127.0.0.1
SR_PORT=${SCHEMA_REGISTRY_PORT:-18082}
SR_START_TIMEOUT=${SCHEMA_REGISTRY_START_TIMEOUT:-120}
SR_STOP_TIMEOUT=${SCHEMA_REGISTRY_STOP_TIMEOUT:-30}
SR_HEAP_OPTS=${SCHEMA_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}
SR_COMPATIBILITY=${SCHEMA_REGISTRY_COMPATIBILITY:-BACKWARD}
SR_MAVEN_REPO=${SCHEMA_REGISTRY_MAVEN_REPO:-}   # optional -Dmaven.repo.local

CACHE_DIR=$ROOT/.cache/schema-registry
APP_DIR=$CACHE_DIR/app
RUNNER_JAR=$APP_DIR/apicurio-registry-local-runner.jar
BUILD_DIR=$CACHE_DIR/build
STAMP=$CACHE_DIR/installed.txt
STAMP_WANT="apicurio-registry-app:${APICURIO_VERSION} quarkus:${QUARKUS_VERSION} config-index:${CONFIG_INDEX_VERSION} everit:${EVERIT_VERSION}"

RUN_DIR=$ROOT/.run/schema-registry
PID_FILE=$RUN_DIR/registry.pid
PORT_FILE=$RUN_DIR/registry.port
LOG_FILE=$RUN_DIR/registry.log

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA=$JAVA_HOME/bin/java
else
  JAVA=java
fi

LOCK_WAIT_S=900
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, pid_running, port_open, stop_process

usage() {
  cat <<EOF
Usage: bash scripts/schema_registry.sh COMMAND

Runs Apicurio Registry ${APICURIO_VERSION} (in-memory storage) on ${HOST}; its Confluent
Schema Registry API is at http://${HOST}:<port>/apis/ccompat/v7 (give that URL to
confluent_kafka's SchemaRegistryClient).

Commands:
  install   assemble the registry from Maven Central into the cache dir (skipped
            when already there)
  start     install if needed, start in the background, wait until ready, set the
            global compatibility to \$SCHEMA_REGISTRY_COMPATIBILITY; prints
            SCHEMA_REGISTRY_URL=... Returns at once if it already runs.
  stop      stop the registry (SIGTERM, up to ${SR_STOP_TIMEOUT} s, then SIGKILL)
  status    exit 0 if the registry runs and answers, 1 otherwise
  restart   stop then start (storage is in memory: all schemas are dropped)
  logs      print the last lines of the registry log

Environment:
  SCHEMA_REGISTRY_PORT           HTTP port (loopback only)            [${SR_PORT}]
  SCHEMA_REGISTRY_START_TIMEOUT  seconds to wait for ready            [${SR_START_TIMEOUT}]
  SCHEMA_REGISTRY_STOP_TIMEOUT   seconds before SIGKILL               [${SR_STOP_TIMEOUT}]
  SCHEMA_REGISTRY_HEAP_OPTS      JVM heap options                     [${SR_HEAP_OPTS}]
  SCHEMA_REGISTRY_COMPATIBILITY  global compatibility set at start    [${SR_COMPATIBILITY}]
                                 (Apicurio's own default is NONE; Confluent's is BACKWARD)
  SCHEMA_REGISTRY_MAVEN_REPO     Maven local repository for install   [~/.m2/repository]
  JAVA_HOME                      Java 17+ to use (else 'java' on PATH)

Files: the built registry in .cache/schema-registry/, pid and log in .run/schema-registry/.
EOF
}

# ---- helpers ---------------------------------------------------------------

# Pid of OUR registry (from the pid file, alive, running our runner jar), or nothing.
registry_pid() { pid_running "$PID_FILE" "$RUNNER_JAR"; }

running_port() { [[ -f $PORT_FILE ]] && tr -dc '0-9' <"$PORT_FILE"; }

base_url() { echo "http://$HOST:$1"; }
ccompat_url() { echo "http://$HOST:$1/apis/ccompat/v7"; }

# HTTP status of a request ('000' when nothing answers). curl, else python3.
http_status() {
  local method=$1 url=$2 body=${3:-}
  if command -v curl >/dev/null 2>&1; then
    local args=(-s -o /dev/null -w '%{http_code}' -m 5 -X "$method")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/vnd.schemaregistry.v1+json' --data "$body")
    curl "${args[@]}" "$url" 2>/dev/null || true
  else
    python3 - "$method" "$url" "$body" <<'EOF' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
m, u, b = sys.argv[1:4]
req = urllib.request.Request(u, method=m, data=b.encode() if b else None,
                             headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
try:
    print(urllib.request.urlopen(req, timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
EOF
  fi
}

# Ready = the health check says UP and the Confluent API lists subjects.
probe_once() {
  [[ $(http_status GET "$(base_url "$1")/health/ready") == 200 ]] &&
    [[ $(http_status GET "$(ccompat_url "$1")/subjects") == 200 ]]
}

installed() {
  [[ -f $STAMP && "$(cat "$STAMP")" == "$STAMP_WANT" && -f $RUNNER_JAR && -d $APP_DIR/lib ]]
}

# ---- install ----------------------------------------------------------------
write_build() {
  local dir=$1
  mkdir -p "$dir/src/main/resources/META-INF"
  # Build-time config that Apicurio's own build has in its module: index the
  # registry's jars (they carry no Jandex index) so Quarkus finds their beans.
  # Apicurio's application.properties itself is unpacked from its jar (pom below).
  cat >"$dir/src/main/resources/META-INF/microprofile-config.properties" <<'EOF'
quarkus.index-dependency.apicurio-app.group-id=io.apicurio
quarkus.index-dependency.apicurio-app.artifact-id=apicurio-registry-app
quarkus.index-dependency.apicurio-cfg.group-id=io.apicurio
quarkus.index-dependency.apicurio-cfg.artifact-id=apicurio-common-app-components-config
quarkus.index-dependency.apicurio-cfgidx.group-id=io.apicurio
quarkus.index-dependency.apicurio-cfgidx.artifact-id=apicurio-common-app-components-config-index
quarkus.index-dependency.apicurio-impexp.group-id=io.apicurio
quarkus.index-dependency.apicurio-impexp.artifact-id=apicurio-registry-utils-import-export
EOF
  # Only Maven Central: Apicurio's POMs also name two other repositories, which
  # this machine cannot reach; block them so Maven fails fast instead of retrying.
  cat >"$dir/settings.xml" <<'EOF'
<settings>
  <mirrors>
    <mirror>
      <id>only-central</id>
      <mirrorOf>external:*,!central</mirrorOf>
      <url>file:///nonexistent</url>
      <blocked>true</blocked>
    </mirror>
  </mirrors>
</settings>
EOF
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/schema_registry.sh: assembles Apicurio Registry ${APICURIO_VERSION} as a Quarkus app. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.test</groupId>
  <artifactId>apicurio-registry-local</artifactId>
  <version>1</version>
  <packaging>jar</packaging>
  <properties>
    <maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-bom</artifactId>
        <version>${QUARKUS_VERSION}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
      <dependency>
        <groupId>io.apicurio</groupId>
        <artifactId>apicurio-common-app-components-config-index</artifactId>
        <version>${CONFIG_INDEX_VERSION}</version>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.apicurio</groupId>
      <artifactId>apicurio-registry-app</artifactId>
      <version>${APICURIO_VERSION}</version>
      <exclusions>
        <exclusion>
          <groupId>com.github.everit-org.json-schema</groupId>
          <artifactId>org.everit.json.schema</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>com.github.erosb</groupId>
      <artifactId>everit-json-schema</artifactId>
      <version>${EVERIT_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>${DEP_PLUGIN_VERSION}</version>
        <executions>
          <execution>
            <id>apicurio-config</id>
            <phase>generate-resources</phase>
            <goals><goal>unpack</goal></goals>
            <configuration>
              <artifactItems>
                <artifactItem>
                  <groupId>io.apicurio</groupId>
                  <artifactId>apicurio-registry-app</artifactId>
                  <version>${APICURIO_VERSION}</version>
                  <includes>application.properties,META-INF/web.xml</includes>
                  <outputDirectory>\${project.build.outputDirectory}</outputDirectory>
                </artifactItem>
              </artifactItems>
            </configuration>
          </execution>
        </executions>
      </plugin>
      <plugin>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-maven-plugin</artifactId>
        <version>${QUARKUS_VERSION}</version>
        <executions>
          <execution>
            <goals><goal>build</goal></goals>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
EOF
}

cmd_install() {
  if installed; then
    log "Apicurio Registry ${APICURIO_VERSION} already installed in ${APP_DIR}"
    return 0
  fi
  need mvn "Maven is needed to assemble the registry from Maven Central"
  need "$JAVA" "Java 17+ is needed to run the registry"
  mkdir -p "$CACHE_DIR"
  lock "$CACHE_DIR/.install.lock" 8
  if installed; then
    log "Apicurio Registry ${APICURIO_VERSION} already installed in ${APP_DIR}"
    return 0
  fi
  log "assembling Apicurio Registry ${APICURIO_VERSION} (Quarkus ${QUARKUS_VERSION}) from Maven Central ..."
  local t0=$SECONDS
  rm -rf "$BUILD_DIR"
  write_build "$BUILD_DIR"
  local repo=()
  [[ -n $SR_MAVEN_REPO ]] && repo=("-Dmaven.repo.local=$SR_MAVEN_REPO")
  if ! mvn -B -Dstyle.color=never -s "$BUILD_DIR/settings.xml" ${repo[@]+"${repo[@]}"} \
      -f "$BUILD_DIR/pom.xml" package >"$CACHE_DIR/mvn.log" 2>&1; then
    grep -E '^\[ERROR\]' "$CACHE_DIR/mvn.log" | head -n 20 >&2 || tail -n 40 "$CACHE_DIR/mvn.log" >&2
    die "mvn could not assemble the registry (full output: $CACHE_DIR/mvn.log)"
  fi
  local runner="$BUILD_DIR/target/apicurio-registry-local-1-runner.jar"
  [[ -f $runner && -d $BUILD_DIR/target/lib ]] ||
    die "mvn finished but $runner or target/lib is missing (see $CACHE_DIR/mvn.log)"
  local tmp="$CACHE_DIR/app.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mv "$BUILD_DIR/target/lib" "$tmp/lib"
  mv "$runner" "$tmp/apicurio-registry-local-runner.jar"
  rm -rf "$APP_DIR" "$BUILD_DIR"
  mv "$tmp" "$APP_DIR"
  printf '%s\n' "$STAMP_WANT" >"$STAMP"
  log "installed $(find "$APP_DIR/lib" -name '*.jar' | wc -l) jars ($(du -sh "$APP_DIR" | cut -f1)) in $((SECONDS - t0)) s"
}

# ---- start ------------------------------------------------------------------
show_log_tail() {
  [[ -s $LOG_FILE ]] || return 0
  printf -- '---- last lines of %s ----\n' "$LOG_FILE" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
}

wait_ready() {
  local pid=$1 port=$2 deadline=$((SECONDS + SR_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      rm -f "$PID_FILE"
      die "the registry (pid $pid) exited during startup; see $LOG_FILE"
    fi
    probe_once "$port" && return 0
    if ((SECONDS >= deadline)); then
      show_log_tail
      log "the registry (pid $pid) did not answer on $HOST:$port within ${SR_START_TIMEOUT} s: stopping it"
      stop_pid "$pid"
      die "the registry did not become ready; see $LOG_FILE"
    fi
    sleep 0.5
  done
}

set_global_compatibility() {
  local port=$1 code
  code=$(http_status PUT "$(ccompat_url "$port")/config" "{\"compatibility\":\"${SR_COMPATIBILITY}\"}")
  [[ $code == 200 ]] || die "setting the global compatibility to ${SR_COMPATIBILITY} failed (HTTP $code)"
}

cmd_start() {
  cmd_install
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9

  local pid
  pid=$(registry_pid)
  if [[ -n $pid ]]; then
    local port
    port=$(running_port)
    [[ $port == "$SR_PORT" ]] ||
      die "a registry (pid $pid) already runs here on port $port, not $SR_PORT; run 'stop' first"
    wait_ready "$pid" "$port"
    log "already running (pid $pid)"
    echo "SCHEMA_REGISTRY_URL=$(ccompat_url "$SR_PORT")"
    return 0
  fi
  rm -f "$PID_FILE"
  port_open "$HOST" "$SR_PORT" &&
    die "port $HOST:$SR_PORT is already in use by another process (set SCHEMA_REGISTRY_PORT)"

  : >"$LOG_FILE"
  local t0=$SECONDS
  local setsid=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # Loopback only; a small JDBC pool (the H2 database is in this JVM's memory);
  # no metrics export. fds 8/9 hold our locks: the JVM must not inherit them.
  # shellcheck disable=SC2086  # SR_HEAP_OPTS holds several options
  nohup ${setsid[@]+"${setsid[@]}"} "$JAVA" $SR_HEAP_OPTS -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true \
    -Dquarkus.http.host="$HOST" \
    -Dquarkus.http.port="$SR_PORT" \
    -Dquarkus.datasource.jdbc.initial-size=2 \
    -Dquarkus.datasource.jdbc.min-size=2 \
    -Dquarkus.datasource.jdbc.max-size=20 \
    -Dquarkus.log.console.color=false \
    -jar "$RUNNER_JAR" >>"$LOG_FILE" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$SR_PORT" >"$PORT_FILE"
  log "started registry pid $pid, waiting for $HOST:$SR_PORT (up to ${SR_START_TIMEOUT} s) ..."
  wait_ready "$pid" "$SR_PORT"
  set_global_compatibility "$SR_PORT"
  log "ready in $((SECONDS - t0)) s (global compatibility ${SR_COMPATIBILITY})"
  echo "SCHEMA_REGISTRY_URL=$(ccompat_url "$SR_PORT")"
}

# ---- stop / status / logs -----------------------------------------------------
# SIGTERM, wait up to SR_STOP_TIMEOUT s, then SIGKILL; remove the pid and port files.
stop_pid() {
  stop_process "$1" "$SR_STOP_TIMEOUT"
  rm -f "$PID_FILE" "$PORT_FILE"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  local pid
  pid=$(registry_pid)
  if [[ -z $pid ]]; then
    rm -f "$PID_FILE" "$PORT_FILE"
    log "not running"
    return 0
  fi
  log "stopping registry pid $pid ..."
  stop_pid "$pid"
  log "stopped"
}

cmd_status() {
  local pid port
  pid=$(registry_pid)
  if [[ -z $pid ]]; then
    echo "schema-registry: not running"
    return 1
  fi
  port=$(running_port)
  if probe_once "$port"; then
    echo "schema-registry: running (pid $pid) SCHEMA_REGISTRY_URL=$(ccompat_url "$port")"
    return 0
  fi
  echo "schema-registry: process $pid alive but not answering on $HOST:$port"
  return 1
}

cmd_logs() {
  [[ -f $LOG_FILE ]] || die "no log yet ($LOG_FILE)"
  tail -n "${1:-100}" "$LOG_FILE"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    logs) shift; cmd_logs "$@" ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
