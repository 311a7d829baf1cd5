# shellcheck shell=bash
# Shell helpers shared by scripts/kafka.sh, scripts/flink.sh, scripts/schema_registry.sh,
# scripts/avro_tools.sh and scripts/k8s_schemas.sh (sourced, not run). Every one of them
# runs under `set -euo pipefail` and sets SCRIPT_DIR and ROOT (the checkout) before sourcing.
# The sourcing script sets LOCK_WAIT_S (how long `lock` waits) before calling `lock` (and so
# `maven_fetch`), and DEP_PLUGIN_VERSION before calling `pom_build` or `maven_fetch`.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

# Take an exclusive lock on a file for the rest of this process (serialises
# concurrent `start`s, e.g. from parallel test workers). No-op without flock.
LOCKED=" "
lock() {
  local file=$1 fd=$2 wait_s=${LOCK_WAIT_S:-600}
  [[ $LOCKED == *" $fd "* ]] && return 0
  command -v flock >/dev/null 2>&1 || return 0
  eval "exec ${fd}>\"\$file\""
  flock -w "$wait_s" "$fd" || die "could not lock $file within $wait_s s"
  LOCKED+="$fd "
}

# The <build> of a pom that only fetches jars: the pinned maven-dependency-plugin.
pom_build() {
  cat <<EOF
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>${DEP_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
EOF
}

# ---- processes ----------------------------------------------------------------

# Print the command line of a pid (arguments joined by spaces), or nothing if it is gone.
cmdline_of() {
  local pid=$1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true
  else
    ps -p "$pid" -o args= 2>/dev/null || true
  fi
}

# pid_running PIDFILE TEXT...: print the pid written in PIDFILE if that process is alive
# and its command line contains each TEXT, in that order (literal text, not a glob);
# else print nothing. Always returns 0: test the output, e.g. pid=$(pid_running ...).
pid_running() {
  local file=$1 pid cmd text
  shift
  [[ -f $file ]] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  cmd=$(cmdline_of "$pid")
  for text in "$@"; do
    [[ $cmd == *"$text"* ]] || return 0
    cmd=${cmd#*"$text"}
  done
  echo "$pid"
}

# stop_process PID TIMEOUT_S: SIGTERM, wait up to TIMEOUT_S seconds for the process to
# go, then SIGKILL and wait up to 2 s more. Returns 0 (also when it was already gone).
stop_process() {
  local pid=$1 timeout_s=$2
  local deadline=$((SECONDS + timeout_s))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "pid $pid still running after ${timeout_s} s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local tries=0
      while kill -0 "$pid" 2>/dev/null && ((tries++ < 10)); do
        sleep 0.2
      done
      break
    fi
    sleep 0.2
  done
}

# port_open HOST PORT: true (0) if something accepts TCP connections on HOST:PORT.
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# ---- Maven Central --------------------------------------------------------------

# jar_has FILE ENTRY: true if FILE is a non-empty zip/jar that holds ENTRY (a path inside
# it), i.e. not a partial download. False, too, when python3 is missing.
jar_has() {
  [[ -s $1 ]] && python3 - "$1" "$2" <<'PY' 2>/dev/null
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.getinfo(sys.argv[2])
PY
}

# maven_fetch GROUP:ARTIFACT:VERSION JAR ENTRY: fetch one artifact from Maven Central
# (maven-dependency-plugin:copy, no pom) to the path JAR, whose name must be the one
# Maven gives it (ARTIFACT-VERSION.jar), unless JAR is already there and holds ENTRY.
# Serialised by a lock (fd 8) on .lock in JAR's directory; its mvn output goes to
# mvn.log there. Dies if mvn fails or the fetched jar lacks ENTRY. Needs ROOT,
# LOCK_WAIT_S and DEP_PLUGIN_VERSION (see the top).
maven_fetch() {
  local coords=$1 jar=$2 entry=$3
  local dir=${jar%/*} name=${jar##*/}
  local rel=${dir#"$ROOT"/}
  jar_has "$jar" "$entry" && return 0
  mkdir -p "$dir"
  lock "$dir/.lock" 8
  jar_has "$jar" "$entry" && return 0
  need mvn "Maven is needed to fetch ${coords} from Maven Central"
  need python3 "Python 3 is needed to check the fetched jar"
  local t0=$SECONDS tmp="$dir/tmp.$$"
  log "fetching ${coords} from Maven Central into ${rel} ..."
  rm -rf "$tmp"
  if ! mvn -B -q -Dstyle.color=never \
      "org.apache.maven.plugins:maven-dependency-plugin:${DEP_PLUGIN_VERSION}:copy" \
      -Dartifact="$coords" -DoutputDirectory="$tmp" >"$dir/mvn.log" 2>&1; then
    tail -n 40 "$dir/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch ${coords} (full output: ${rel}/mvn.log)"
  fi
  jar_has "$tmp/$name" "$entry" || { rm -rf "$tmp"; die "the fetched ${name} has no ${entry}"; }
  mv -f "$tmp/$name" "$jar"
  rm -rf "$tmp"
  log "${jar#"$ROOT"/} fetched in $((SECONDS - t0)) s"
}

# ---- Debian packages ----------------------------------------------------------

# apt_install PACKAGE...: installs Debian packages that are missing (as root, non-interactive);
# refreshes the package lists first when they are empty or an install fails. Serialised by a
# lock (fd 7) so that parallel starts do not fight over dpkg's lock.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  need apt-get "Debian's package manager installs ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root (apt-get); install them and run again"
  mkdir -p "$ROOT/.run"
  lock "$ROOT/.run/.apt.lock" 7
  log "installing Debian packages: ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$ROOT/.run/apt.log" 2>&1; then
    apt-get update -q >>"$ROOT/.run/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$ROOT/.run/apt.log" 2>&1 ||
      { tail -n 30 "$ROOT/.run/apt.log" >&2; die "apt-get could not install ${missing[*]} (log: .run/apt.log)"; }
  fi
}
