#!/usr/bin/env bash
# Run a real Apache Flink standalone session cluster (a JobManager and TaskManagers, each its
# own JVM) on loopback, and everything Beam's FlinkRunner needs to submit the project's
# pipelines to it, for the tests and CI. No Docker, nothing downloaded at run time: Flink's
# files come from PyPI, the Beam Flink job server's jars from Maven Central through `mvn`,
# and the Python SDK at the job server's Beam version from PyPI into .venv-flink.
#
#   bash scripts/flink.sh install            Flink, job server and .venv-flink (once)
#   bash scripts/flink.sh start              install if needed, start JM + 1 TM + the worker pool, wait
#   bash scripts/flink.sh stop               stop the worker pool, all TaskManagers and the JobManager
#   bash scripts/flink.sh status             exit 0 if the REST API answers with >= 1 TaskManager
#   bash scripts/flink.sh start-taskmanager  start one more TaskManager (e.g. after a kill)
#   bash scripts/flink.sh kill-taskmanager   SIGKILL the newest TaskManager (a crash, for recovery tests)
#   bash scripts/flink.sh runner-args        print the Beam flags that submit to this cluster
#   bash scripts/flink.sh jobs               list the cluster's jobs (id, state, name)
#   bash scripts/flink.sh cancel ID|NAME|--all  cancel running jobs (an endless job runs until then)
#   bash scripts/flink.sh logs               tail the JobManager and TaskManager logs
#
# Run `bash scripts/flink.sh --help` for the environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# ---- pinned versions -------------------------------------------------------
FLINK_VERSION=1.19.3           # cluster: PyPI apache-flink + apache-flink-libraries
FLINK_MINOR=1.19               # Beam's beam-runners-flink-<minor>
BEAM_FLINK_VERSION=2.62.0      # newest Beam whose Flink job server resolves from Maven Central
SLF4J_VERSION=1.7.36           # logging backend of the job server (slf4j-simple)
DEP_PLUGIN_VERSION=3.6.1       # maven-dependency-plugin
KAFKA_CLIENTS_VERSION=3.9.1    # Beam's Java KafkaIO on Flink (4.x dropped the poll(long) it calls)
JAMM_VERSION=0.4.0             # the Java SDK harness's `provided` dependency (EMBEDDED environment)

# ---- settings (environment) ------------------------------------------------
HOST=127.0.0.1
# Not Flink's default 8081 (often taken by other local services and Flink clusters).
FLINK_REST_PORT=${FLINK_REST_PORT:-18081}
FLINK_RPC_PORT=${FLINK_RPC_PORT:-16123}
FLINK_SLOTS=${FLINK_SLOTS:-2}
# The Python SDK workers' pool (pipelines/workers.py): jobs run their Python code there, not in
# the submitting process, so a job outlives its client.
FLINK_WORKER_PORT=${FLINK_WORKER_PORT:-18099}
# Sized for a 2-core 24 GB machine that runs other things too: the Python SDK harness runs in
# the worker pool's process, so a TaskManager needs little more than Flink's own needs.
FLINK_JM_MEMORY=${FLINK_JM_MEMORY:-1024m}
FLINK_TM_MEMORY=${FLINK_TM_MEMORY:-3072m}
FLINK_START_TIMEOUT=${FLINK_START_TIMEOUT:-180}
FLINK_EXTRA_CONFIG=${FLINK_EXTRA_CONFIG:-}
PYTHON=${PYTHON:-python3}

CACHE_DIR=$ROOT/.cache/flink
PKGS_DIR=$CACHE_DIR/pkgs
FLINK_HOME=$PKGS_DIR/pyflink
FLINK_STAMP=$CACHE_DIR/installed.txt
FLINK_STAMP_WANT="apache-flink==${FLINK_VERSION}"

JS_DIR=$ROOT/.cache/flink-jobserver
JS_LIBS=$JS_DIR/lib
JS_JAR=$JS_DIR/beam-flink-${FLINK_MINOR}-job-server-${BEAM_FLINK_VERSION}.jar
JS_STAMP=$JS_DIR/installed.txt
KAFKA_EXPANSION_JAR=$JS_DIR/beam-kafka-expansion-service-${BEAM_FLINK_VERSION}.jar
JS_STAMP_WANT="beam-runners-flink-${FLINK_MINOR}:${BEAM_FLINK_VERSION} slf4j-simple:${SLF4J_VERSION} beam-sdks-java-io-kafka:${BEAM_FLINK_VERSION} kafka-clients:${KAFKA_CLIENTS_VERSION} jamm:${JAMM_VERSION}"

VENV=$ROOT/.venv-flink
REQS=$ROOT/requirements-flink.txt

RUN_DIR=$ROOT/.run/flink
CONF_DIR=$RUN_DIR/conf
LOG_DIR=$RUN_DIR/log
PID_DIR=$RUN_DIR/pid
CHECKPOINT_DIR=$RUN_DIR/checkpoints
TM_PID_FILE=$PID_DIR/flink-streamml-taskexecutor.pid
JM_PID_FILE=$PID_DIR/flink-streamml-standalonesession.pid
WORKERS_PID_FILE=$PID_DIR/workers.pid

LOCK_WAIT_S=1200
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock, pom_build

usage() {
  cat <<EOF
Usage: bash scripts/flink.sh COMMAND

Runs a real Apache Flink ${FLINK_VERSION} standalone session cluster on ${HOST}, for Beam's
FlinkRunner (Beam ${BEAM_FLINK_VERSION}, job server for Flink ${FLINK_MINOR}, SDK in .venv-flink).

Commands:
  install            Flink ${FLINK_VERSION} from PyPI into .cache/flink (apache-flink-libraries
                     + apache-flink, --no-deps: only their files are used), the job server's
                     jars from Maven Central into .cache/flink-jobserver plus a launcher jar, and
                     .venv-flink from requirements-flink.txt (each skipped when already there)
  start              install if needed, start a JobManager and one TaskManager (separate JVMs)
                     and the Python worker pool (pipelines/workers.py, from .venv-flink), and
                     wait until the REST API reports a TaskManager; returns at once if the
                     cluster already runs. Prints FLINK_MASTER=${HOST}:<rest port>
  stop               stop the worker pool, every TaskManager, then the JobManager
  status             exit 0 if the REST API answers and reports >= 1 TaskManager
  start-taskmanager  start one more TaskManager and wait until it registered
  kill-taskmanager   SIGKILL the newest TaskManager (simulated crash)
  runner-args        print the Beam flags that run a pipeline on this cluster (its Python
                     code in the worker pool: the job outlives the submitting process)
  jobs               list the cluster's jobs: id, state, name
  cancel ID|NAME|--all  cancel the running jobs with that Flink job id or name, or all
  logs               print the last lines of the JobManager and TaskManager logs

Environment:
  FLINK_REST_PORT      REST API / web UI port       [${FLINK_REST_PORT}]
  FLINK_RPC_PORT       JobManager RPC port          [${FLINK_RPC_PORT}]
  FLINK_SLOTS          slots per TaskManager        [${FLINK_SLOTS}]
  FLINK_WORKER_PORT    Python worker pool port      [${FLINK_WORKER_PORT}]
  FLINK_JM_MEMORY      JobManager process memory    [${FLINK_JM_MEMORY}]
  FLINK_TM_MEMORY      TaskManager process memory   [${FLINK_TM_MEMORY}]
  FLINK_START_TIMEOUT  seconds to wait for ready    [${FLINK_START_TIMEOUT}]
  FLINK_EXTRA_CONFIG   extra config.yaml lines (flat keys, 'key: value'), replacing the defaults' same keys
  PYTHON               Python 3.11 that makes .venv-flink [${PYTHON}]
  JAVA_HOME            Java 17 to use (else 'java' on PATH)

Files: Flink in .cache/flink/, job server in .cache/flink-jobserver/, the SDK in .venv-flink/;
config, pids, logs and checkpoints in .run/flink/.
EOF
}

# ---- helpers ---------------------------------------------------------------

# Pids listed in a Flink pid file that are still alive.
live_pids() {
  [[ -f $1 ]] || return 0
  local pid
  while read -r pid; do
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
  done <"$1"
  return 0
}

# GET a REST path of the cluster; prints the body, fails when it does not answer.
rest() {
  "$PYTHON" - "http://$HOST:$FLINK_REST_PORT$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read().decode())
EOF
}

# Number of TaskManagers the REST API reports (nothing when it does not answer).
taskmanagers() {
  rest /overview 2>/dev/null | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["taskmanagers"])' 2>/dev/null || true
}

flink_env() {
  export FLINK_CONF_DIR=$CONF_DIR FLINK_LOG_DIR=$LOG_DIR FLINK_PID_DIR=$PID_DIR FLINK_IDENT_STRING=streamml
  if [[ -n "${JAVA_HOME:-}" ]]; then export JAVA_HOME; fi
}

# ---- install ----------------------------------------------------------------
flink_installed() {
  [[ -f $FLINK_STAMP && "$(cat "$FLINK_STAMP")" == "$FLINK_STAMP_WANT" ]] &&
    compgen -G "$FLINK_HOME/lib/flink-dist-${FLINK_VERSION}.jar" >/dev/null && [[ -x $FLINK_HOME/bin/jobmanager.sh ]]
}

jobserver_installed() {
  [[ -f $JS_STAMP && "$(cat "$JS_STAMP")" == "$JS_STAMP_WANT" && -f $JS_JAR && -f $KAFKA_EXPANSION_JAR ]]
}

venv_stamp() { echo "$VENV/.installed-$(cat "$REQS" "$ROOT/setup.py" | sha256sum | cut -c1-16)"; }

venv_installed() { [[ -f $(venv_stamp) && -x $VENV/bin/python ]]; }

install_venv() {
  venv_installed && return 0
  local t0=$SECONDS
  log "creating .venv-flink with requirements-flink.txt (apache-beam ${BEAM_FLINK_VERSION}) ..."
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >"$VENV/pip.log" 2>&1 || true
  # The pins, then the project with the pins as constraints: pip fails if setup.py's ranges
  # refuse one of them (a clash shows here, not at run time on the workers).
  if ! "$VENV/bin/pip" install -q -r "$REQS" >>"$VENV/pip.log" 2>&1 ||
     ! "$VENV/bin/pip" install -q -e "$ROOT" -c "$REQS" >>"$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log" >&2
    die "pip could not install requirements-flink.txt and the project into .venv-flink (log: .venv-flink/pip.log)"
  fi
  rm -f "$VENV"/.installed-* && touch "$(venv_stamp)"
  log ".venv-flink ready in $((SECONDS - t0)) s"
}

install_flink() {
  flink_installed && return 0
  local t0=$SECONDS tmp="$CACHE_DIR/pkgs.tmp.$$"
  log "installing Flink ${FLINK_VERSION} from PyPI (apache-flink-libraries is a 230 MB sdist) ..."
  rm -rf "$tmp"
  # --no-deps: only the files (bin/, conf/, lib/, opt/, plugins/) are used, and apache-flink's
  # Python dependencies pin an apache-beam that conflicts with requirements-flink.txt.
  if ! "$VENV/bin/pip" install -q --no-deps --target "$tmp" \
      "apache-flink-libraries==${FLINK_VERSION}" "apache-flink==${FLINK_VERSION}" >"$CACHE_DIR/pip.log" 2>&1; then
    tail -n 30 "$CACHE_DIR/pip.log" >&2
    rm -rf "$tmp"
    die "pip could not fetch Flink ${FLINK_VERSION} (log: .cache/flink/pip.log)"
  fi
  [[ -f $tmp/pyflink/lib/flink-dist-${FLINK_VERSION}.jar ]] || { rm -rf "$tmp"; die "flink-dist-${FLINK_VERSION}.jar missing after pip"; }
  chmod +x "$tmp"/pyflink/bin/*.sh "$tmp/pyflink/bin/flink" 2>/dev/null || true
  rm -rf "$PKGS_DIR"
  mv "$tmp" "$PKGS_DIR"
  printf '%s\n' "$FLINK_STAMP_WANT" >"$FLINK_STAMP"
  log "Flink ${FLINK_VERSION} installed in $((SECONDS - t0)) s ($(du -sh "$PKGS_DIR" | cut -f1))"
}

write_jobserver_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/flink.sh: only used to fetch the Beam Flink job server's jars.
     The shaded beam-runners-flink-${FLINK_MINOR}-job-server jar is not served by the Maven
     registry reachable here; the runner and its dependencies are, so the job server is
     assembled from them (FlinkJobServerDriver is in beam-runners-flink-${FLINK_MINOR}). -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.test</groupId>
  <artifactId>beam-flink-jobserver</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-${FLINK_MINOR}</artifactId>
      <version>${BEAM_FLINK_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
$(pom_build)
</project>
EOF
}

# Beam's Java KafkaIO, for endless Kafka streams on Flink (transforms/kafka_flink.py): the
# runner translates its unbounded Read natively, and its one Java step runs in an EMBEDDED Java
# SDK harness inside the TaskManager. Resolved on its own, so that its dependencies never
# change the versions the job server resolved; only jars the job server lacks are added.
write_kafkaio_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/flink.sh: Beam's Java KafkaIO for the Flink job server. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.test</groupId>
  <artifactId>beam-flink-kafkaio</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-sdks-java-io-kafka</artifactId>
      <version>${BEAM_FLINK_VERSION}</version>
      <exclusions>
        <!-- Confluent's schema-registry clients are not on Maven Central; unused here. -->
        <exclusion><groupId>io.confluent</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-clients</artifactId>
      <version>${KAFKA_CLIENTS_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>com.github.jbellis</groupId>
      <artifactId>jamm</artifactId>
      <version>${JAMM_VERSION}</version>
    </dependency>
  </dependencies>
$(pom_build)
</project>
EOF
}

# Writes a jar holding only a manifest: Main-Class $2, Class-Path every jar in $3 (relative).
write_launcher() {
  "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import os, sys, zipfile
jar, main, libs = sys.argv[1:]
rel = os.path.relpath(libs, os.path.dirname(jar))
jars = sorted(f"{rel}/{f}" for f in os.listdir(libs) if f.endswith(".jar"))
def wrap(line):  # manifest lines are at most 72 bytes; continuation lines start with a space
    out, rest = [line[:70]], line[70:]
    while rest:
        out.append(" " + rest[:69]); rest = rest[69:]
    return "\r\n".join(out)
manifest = "\r\n".join(["Manifest-Version: 1.0", wrap("Main-Class: " + main),
                        wrap("Class-Path: " + " ".join(jars)), "", ""])
with zipfile.ZipFile(jar + ".tmp", "w") as z:
    z.writestr("META-INF/MANIFEST.MF", manifest)
os.replace(jar + ".tmp", jar)
EOF
}

# Copies the jars of $1 whose artifact is not in $2 already (file names without versions).
add_missing_jars() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import os, re, shutil, sys
src, dst = sys.argv[1:]
def artifact(name):  # kafka-clients-3.9.1.jar -> kafka-clients; zstd-jni-1.5.6-4.jar -> zstd-jni
    m = re.match(r"^(.*?)-(\d[^-]*)(-[A-Za-z][\w.]*)?\.jar$", name)
    return m.group(1) + (m.group(3) or "") if m else name
have = {artifact(f) for f in os.listdir(dst)}
for f in sorted(os.listdir(src)):
    if f.endswith(".jar") and artifact(f) not in have:
        shutil.copy2(os.path.join(src, f), os.path.join(dst, f))
EOF
}

install_jobserver() {
  jobserver_installed && return 0
  need mvn "Maven is needed to fetch the Beam Flink job server's jars from Maven Central"
  local t0=$SECONDS tmp="$JS_DIR/lib.tmp.$$"
  log "installing the Beam ${BEAM_FLINK_VERSION} Flink ${FLINK_MINOR} job server from Maven Central ..."
  rm -rf "$tmp"
  write_jobserver_pom "$JS_DIR/pom.xml"
  if ! mvn -B -q -Dstyle.color=never -f "$JS_DIR/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$JS_DIR/mvn.log" 2>&1; then
    tail -n 40 "$JS_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch the job server's jars (full output: .cache/flink-jobserver/mvn.log)"
  fi
  [[ -f "$tmp/beam-runners-flink-${FLINK_MINOR}-${BEAM_FLINK_VERSION}.jar" ]] ||
    { rm -rf "$tmp"; die "mvn finished but beam-runners-flink-${FLINK_MINOR}-${BEAM_FLINK_VERSION}.jar is missing"; }
  write_kafkaio_pom "$JS_DIR/pom-kafkaio.xml"
  if ! mvn -B -q -Dstyle.color=never -f "$JS_DIR/pom-kafkaio.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp.kafkaio" >"$JS_DIR/mvn-kafkaio.log" 2>&1; then
    tail -n 40 "$JS_DIR/mvn-kafkaio.log" >&2 || true
    rm -rf "$tmp" "$tmp.kafkaio"
    die "mvn could not fetch KafkaIO's jars (full output: .cache/flink-jobserver/mvn-kafkaio.log)"
  fi
  add_missing_jars "$tmp.kafkaio" "$tmp"
  rm -rf "$tmp.kafkaio" "$JS_LIBS"
  mv "$tmp" "$JS_LIBS"
  # Thin launchers: jars with only a manifest whose Class-Path names lib/*.jar. FlinkRunner runs
  # `java -jar <--flink_job_server_jar>`, which also ships that class path to the TaskManagers;
  # the expansion service expands ReadFromKafka (transforms/kafka_flink.py) from the same jars.
  write_launcher "$JS_JAR" org.apache.beam.runners.flink.FlinkJobServerDriver "$JS_LIBS"
  write_launcher "$KAFKA_EXPANSION_JAR" org.apache.beam.sdk.expansion.service.ExpansionService "$JS_LIBS"
  printf '%s\n' "$JS_STAMP_WANT" >"$JS_STAMP"
  log "job server installed in $((SECONDS - t0)) s: $(find "$JS_LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$JS_LIBS" | cut -f1)), launchers ${JS_JAR#"$ROOT"/}, ${KAFKA_EXPANSION_JAR#"$ROOT"/}"
}

cmd_install() {
  need "$PYTHON" "Python 3.11 is needed for .venv-flink"
  mkdir -p "$CACHE_DIR" "$JS_DIR"
  if venv_installed && flink_installed && jobserver_installed; then
    log "already installed (Flink ${FLINK_VERSION}, job server ${BEAM_FLINK_VERSION}, .venv-flink)"
    return 0
  fi
  lock "$CACHE_DIR/.install.lock" 8
  install_venv
  install_flink
  install_jobserver
}

# ---- start ------------------------------------------------------------------
write_config() {
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$PID_DIR" "$CHECKPOINT_DIR"
  local f
  for f in log4j.properties log4j-console.properties log4j-cli.properties logback.xml logback-console.xml; do
    [[ -f $FLINK_HOME/conf/$f ]] && cp -f "$FLINK_HOME/conf/$f" "$CONF_DIR/$f"
  done
  local opens
  opens=$(sed -n 's/^ *all: *//p' "$FLINK_HOME/conf/config.yaml" | head -n 1)
  # Flat keys: Flink 1.19's config.yaml reads them as the nested form.
  cat >"$CONF_DIR/config.yaml.tmp" <<EOF
# Written by scripts/flink.sh on each start: standalone session cluster on loopback.
env.java.opts.all: ${opens}
# Full stack traces in the logs and the REST API's exception history, also for exceptions
# the JIT would otherwise throw without one (a bare "java.lang.ClassCastException").
env.java.opts.taskmanager: -XX:-OmitStackTraceInFastThrow
env.java.opts.jobmanager: -XX:-OmitStackTraceInFastThrow
env.log.dir: ${LOG_DIR}
env.pid.dir: ${PID_DIR}
jobmanager.rpc.address: ${HOST}
jobmanager.rpc.port: ${FLINK_RPC_PORT}
jobmanager.bind-host: ${HOST}
jobmanager.memory.process.size: ${FLINK_JM_MEMORY}
jobmanager.execution.failover-strategy: region
taskmanager.host: ${HOST}
taskmanager.bind-host: ${HOST}
taskmanager.numberOfTaskSlots: ${FLINK_SLOTS}
taskmanager.memory.process.size: ${FLINK_TM_MEMORY}
# Each Beam job loads the job server's ~200 jars into the TaskManager again, and Flink does
# not unload all of them (apache/beam#25510): with the default 256 MB the fifth job or so
# failed with "OutOfMemoryError: Metaspace".
taskmanager.memory.jvm-metaspace.size: 1024m
# Beam's batch translation makes many exchanges; each blocking (sort-shuffle) result partition
# wants 512 network buffers by default, more than a small TaskManager has ("Insufficient number
# of network buffers: required 512, but only 455 available" with the defaults).
taskmanager.memory.network.fraction: 0.25
taskmanager.memory.network.min: 256mb
taskmanager.memory.network.max: 640mb
taskmanager.network.sort-shuffle.min-buffers: 64
# Beam's Fn API sends elements to the Python workers over gRPC, whose buffers are direct memory
# that Flink's budget does not count; with no task off-heap memory a 75k-record batch job
# failed with "OutOfMemoryError: Direct buffer memory" sending a stage's input to its worker.
# Taken from managed memory (sort buffers of batch groupings, which spill to disk instead).
taskmanager.memory.task.off-heap.size: 512m
taskmanager.memory.managed.fraction: 0.1
parallelism.default: 1
rest.address: ${HOST}
rest.bind-address: ${HOST}
rest.port: ${FLINK_REST_PORT}
blob.server.port: 0
# A killed TaskManager is noticed within seconds, not the default 50 s; a job retries for
# 90 s, long enough for a replacement TaskManager to start and register.
heartbeat.interval: 2000
heartbeat.timeout: 10000
restart-strategy.type: fixed-delay
restart-strategy.fixed-delay.attempts: 30
restart-strategy.fixed-delay.delay: 3 s
state.checkpoints.dir: file://${CHECKPOINT_DIR}
state.savepoints.dir: file://${RUN_DIR}/savepoints
EOF
  if [[ -n $FLINK_EXTRA_CONFIG ]]; then
    # Its keys replace the defaults above: Flink's YAML parser refuses a key given twice.
    local key
    while IFS= read -r key; do
      [[ -n $key ]] && sed -i "/^${key//./\\.}:/d" "$CONF_DIR/config.yaml.tmp"
    done < <(sed -n 's/^[[:space:]]*\([A-Za-z0-9_.-]*\)[[:space:]]*:.*/\1/p' <<<"$FLINK_EXTRA_CONFIG")
    printf '# FLINK_EXTRA_CONFIG\n%s\n' "$FLINK_EXTRA_CONFIG" >>"$CONF_DIR/config.yaml.tmp"
  fi
  mv -f "$CONF_DIR/config.yaml.tmp" "$CONF_DIR/config.yaml"
  echo "$HOST:$FLINK_REST_PORT" >"$CONF_DIR/masters"
  echo "$HOST" >"$CONF_DIR/workers"
}

show_log_tail() {
  local f
  for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.out; do
    [[ -s $f ]] || continue
    printf -- '---- last lines of %s ----\n' "${f#"$ROOT"/}" >&2
    tail -n 20 "$f" >&2 || true
  done
}

# Wait until the REST API reports at least $1 TaskManagers.
wait_taskmanagers() {
  local want=$1 deadline=$((SECONDS + FLINK_START_TIMEOUT)) n
  while :; do
    n=$(taskmanagers)
    if [[ -n $n ]] && ((n >= want)); then return 0; fi
    if [[ -z $(live_pids "$JM_PID_FILE") ]]; then
      show_log_tail
      die "the JobManager exited during startup; see ${LOG_DIR#"$ROOT"/}"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail
      die "the REST API on $HOST:$FLINK_REST_PORT reported ${n:-no answer} TaskManagers, not >= $want, within ${FLINK_START_TIMEOUT} s"
    fi
    sleep 1
  done
}

start_taskmanager() {
  flink_env
  "$FLINK_HOME/bin/taskmanager.sh" start >>"$LOG_DIR/daemon.out" 2>&1 </dev/null 8>&- 9>&- ||
    die "taskmanager.sh start failed; see ${LOG_DIR#"$ROOT"/}/daemon.out"
}

cmd_start() {
  cmd_install
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  if [[ -n $(live_pids "$JM_PID_FILE") ]]; then
    if [[ -z $(live_pids "$TM_PID_FILE") ]]; then
      log "JobManager runs without a TaskManager: starting one"
      start_taskmanager
    fi
    wait_taskmanagers 1
    [[ -n $(live_pids "$WORKERS_PID_FILE") ]] || start_workers
    log "already running"
    echo "FLINK_MASTER=$HOST:$FLINK_REST_PORT"
    return 0
  fi
  rm -f "$JM_PID_FILE" "$TM_PID_FILE"
  local p
  for p in "$FLINK_REST_PORT" "$FLINK_RPC_PORT" "$FLINK_WORKER_PORT"; do
    port_open "$HOST" "$p" && die "port $HOST:$p is already in use (another Flink? set FLINK_REST_PORT / FLINK_RPC_PORT / FLINK_WORKER_PORT)"
  done
  need "${JAVA_HOME:+$JAVA_HOME/bin/}java" "Java 17 is needed to run Flink"
  write_config
  local t0=$SECONDS
  flink_env
  "$FLINK_HOME/bin/jobmanager.sh" start >>"$LOG_DIR/daemon.out" 2>&1 </dev/null 8>&- 9>&- ||
    die "jobmanager.sh start failed; see ${LOG_DIR#"$ROOT"/}/daemon.out"
  start_taskmanager
  log "started JobManager $(live_pids "$JM_PID_FILE") and TaskManager $(live_pids "$TM_PID_FILE"), waiting for http://$HOST:$FLINK_REST_PORT (up to ${FLINK_START_TIMEOUT} s) ..."
  wait_taskmanagers 1
  start_workers
  log "ready in $((SECONDS - t0)) s: $(rest /overview)"
  echo "FLINK_MASTER=$HOST:$FLINK_REST_PORT"
}

# The Python worker pool, from .venv-flink with this checkout first on the path; it inherits
# this environment (e.g. STREAMML_STATE_KEY, the jobs' model-signing key).
start_workers() {
  rm -f "$WORKERS_PID_FILE"
  mkdir -p "$PID_DIR" "$LOG_DIR"
  (cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" -m pipelines.workers \
    --port "$FLINK_WORKER_PORT" >>"$LOG_DIR/workers.log" 2>&1 </dev/null 8>&- 9>&-) &
  echo $! >"$WORKERS_PID_FILE"
  local deadline=$((SECONDS + 60))
  until port_open "$HOST" "$FLINK_WORKER_PORT"; do
    if [[ -z $(live_pids "$WORKERS_PID_FILE") ]]; then
      tail -n 20 "$LOG_DIR/workers.log" >&2 || true
      die "the worker pool exited during startup; see ${LOG_DIR#"$ROOT"/}/workers.log"
    fi
    ((SECONDS < deadline)) || die "the worker pool did not listen on $HOST:$FLINK_WORKER_PORT within 60 s"
    sleep 0.2
  done
  log "worker pool $(live_pids "$WORKERS_PID_FILE") listening on $HOST:$FLINK_WORKER_PORT"
}

stop_workers() {
  local pid tries=0
  for pid in $(live_pids "$WORKERS_PID_FILE"); do
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((tries++ < 100)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$WORKERS_PID_FILE"
}

cmd_start_taskmanager() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  [[ -n $(live_pids "$JM_PID_FILE") ]] || die "no JobManager runs: 'start' first"
  start_taskmanager
  # As many as run here: not "the REST count + 1", which still counts a TaskManager killed
  # a moment ago (until its heartbeat times out).
  wait_taskmanagers "$(live_pids "$TM_PID_FILE" | wc -l)"
  log "TaskManagers: $(taskmanagers) (pids $(live_pids "$TM_PID_FILE" | tr '\n' ' '))"
}

cmd_kill_taskmanager() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  local pid
  pid=$(live_pids "$TM_PID_FILE" | tail -n 1)
  [[ -n $pid ]] || die "no TaskManager runs"
  kill -KILL "$pid"
  local tries=0
  while kill -0 "$pid" 2>/dev/null && ((tries++ < 50)); do sleep 0.1; done
  # Forget it in the pid file, so that a later stop or start does not count it.
  grep -vx "$pid" "$TM_PID_FILE" >"$TM_PID_FILE.tmp" || true
  if [[ -s $TM_PID_FILE.tmp ]]; then mv -f "$TM_PID_FILE.tmp" "$TM_PID_FILE"; else rm -f "$TM_PID_FILE" "$TM_PID_FILE.tmp"; fi
  log "killed TaskManager pid $pid (SIGKILL)"
}

# ---- stop / status ---------------------------------------------------------------
cmd_stop() {
  mkdir -p "$RUN_DIR"
  lock "$RUN_DIR/.lock" 9
  stop_workers
  if [[ -z $(live_pids "$JM_PID_FILE") && -z $(live_pids "$TM_PID_FILE") ]]; then
    rm -f "$JM_PID_FILE" "$TM_PID_FILE"
    log "not running"
    return 0
  fi
  flink_env
  # stop-all: SIGTERM each, SIGKILL after 10 s (flink-daemon.sh).
  [[ -z $(live_pids "$TM_PID_FILE") ]] || "$FLINK_HOME/bin/taskmanager.sh" stop-all >>"$LOG_DIR/daemon.out" 2>&1 || true
  [[ -z $(live_pids "$JM_PID_FILE") ]] || "$FLINK_HOME/bin/jobmanager.sh" stop-all >>"$LOG_DIR/daemon.out" 2>&1 || true
  local pid
  for pid in $(live_pids "$TM_PID_FILE") $(live_pids "$JM_PID_FILE"); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$JM_PID_FILE" "$TM_PID_FILE"
  log "stopped"
}

cmd_status() {
  local jm tm n
  jm=$(live_pids "$JM_PID_FILE" | tr '\n' ' ')
  tm=$(live_pids "$TM_PID_FILE" | tr '\n' ' ')
  if [[ -z $jm ]]; then
    echo "flink: not running${tm:+ (stray TaskManagers: $tm)}"
    return 1
  fi
  n=$(taskmanagers)
  if [[ -n $n ]] && ((n >= 1)); then
    echo "flink: running (JobManager $jm, TaskManagers ${tm:-none}; REST reports $n; worker pool $(live_pids "$WORKERS_PID_FILE" | tr '\n' ' ')) FLINK_MASTER=$HOST:$FLINK_REST_PORT"
    return 0
  fi
  echo "flink: JobManager $jm alive but REST on $HOST:$FLINK_REST_PORT reports ${n:-no answer} TaskManagers"
  return 1
}

cmd_runner_args() {
  echo "--runner=FlinkRunner --flink_master=$HOST:$FLINK_REST_PORT --flink_version=$FLINK_MINOR --flink_job_server_jar=$JS_JAR --environment_type=EXTERNAL --environment_config=$HOST:$FLINK_WORKER_PORT"
}

# The cluster's jobs, one per line: id, state, name (newest first).
cmd_jobs() {
  local overview
  overview=$(rest /jobs/overview 2>/dev/null) || die "no Flink cluster answers on http://$HOST:$FLINK_REST_PORT ('start' first)"
  "$PYTHON" -c '
import json, sys
for j in sorted(json.load(sys.stdin)["jobs"], key=lambda j: -j["start-time"]):
    print(j["jid"], j["state"], j["name"])' <<<"$overview"
}

# Cancel the running jobs with Flink job id or name $1 (--all: every running job).
cmd_cancel() {
  local want=${1:-} jid state name found=0 jobs
  [[ -n $want ]] || die "usage: flink.sh cancel ID|NAME|--all (see 'flink.sh jobs')"
  jobs=$(cmd_jobs) || exit 1
  while read -r jid state name; do
    [[ $state == RUNNING || $state == RESTARTING || $state == CREATED || $state == INITIALIZING ]] || continue
    [[ $want == --all || $want == "$jid" || $want == "$name" ]] || continue
    "$PYTHON" -c 'import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PATCH"), timeout=10).read()' \
      "http://$HOST:$FLINK_REST_PORT/jobs/$jid?mode=cancel"
    log "cancelled $jid ($name)"
    found=1
  done <<<"$jobs"
  ((found)) || die "no running job matches '$want' (see 'flink.sh jobs')"
}

cmd_logs() {
  local f
  for f in "$LOG_DIR"/*standalonesession*.log "$LOG_DIR"/*taskexecutor*.log; do
    [[ -f $f ]] || continue
    printf -- '---- %s ----\n' "${f#"$ROOT"/}"
    tail -n "${1:-50}" "$f"
  done
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    start-taskmanager) cmd_start_taskmanager ;;
    kill-taskmanager) cmd_kill_taskmanager ;;
    runner-args) cmd_runner_args ;;
    jobs) cmd_jobs ;;
    cancel) shift; cmd_cancel "$@" ;;
    python) echo "$VENV/bin/python" ;;
    logs) shift; cmd_logs "$@" ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
