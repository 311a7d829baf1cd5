#!/usr/bin/env bash
# Fetches Apache Avro's Java command-line tools (avro-tools, one self-contained jar) from
# Maven Central into .cache/avro-tools/, so that tests/test_avro_files.py can write container
# files with a foreign writer (Java, every codec) without network. Idempotent: does nothing
# when the jar is there. Run by scripts/setup.sh.
#
#   bash scripts/avro_tools.sh          fetch if missing
#   bash scripts/avro_tools.sh path     print the jar's path
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

AVRO_VERSION=1.12.2            # org.apache.avro:avro-tools
AVRO_TOOLS=org.apache.avro:avro-tools:${AVRO_VERSION}
MAIN_CLASS=org/apache/avro/tool/Main.class
DEP_PLUGIN_VERSION=3.6.1       # maven-dependency-plugin, as in scripts/kafka.sh

CACHE_DIR=$ROOT/.cache/avro-tools
JAR=$CACHE_DIR/avro-tools-${AVRO_VERSION}.jar

LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock

# The jar is there and holds the tools' entry point (not a partial download).
has_main() {
  [[ -s $1 ]] && python3 - "$1" "$MAIN_CLASS" <<'PY' 2>/dev/null
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.getinfo(sys.argv[2])
PY
}

install() {
  has_main "$JAR" && return 0
  mkdir -p "$CACHE_DIR"
  lock "$CACHE_DIR/.lock" 8
  has_main "$JAR" && return 0
  need mvn "Maven is needed to fetch ${AVRO_TOOLS} from Maven Central"
  need python3 "Python 3 is needed to check the fetched jar"
  local t0=$SECONDS tmp="$CACHE_DIR/tmp.$$"
  log "fetching ${AVRO_TOOLS} from Maven Central into .cache/avro-tools ..."
  rm -rf "$tmp"
  if ! mvn -B -q -Dstyle.color=never \
      "org.apache.maven.plugins:maven-dependency-plugin:${DEP_PLUGIN_VERSION}:copy" \
      -Dartifact="$AVRO_TOOLS" -DoutputDirectory="$tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
    tail -n 40 "$CACHE_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch ${AVRO_TOOLS} (full output: .cache/avro-tools/mvn.log)"
  fi
  has_main "$tmp/${JAR##*/}" || { rm -rf "$tmp"; die "the fetched ${JAR##*/} has no ${MAIN_CLASS}"; }
  mv -f "$tmp/${JAR##*/}" "$JAR"
  rm -rf "$tmp"
  log "${JAR#"$ROOT"/} fetched in $((SECONDS - t0)) s"
}

case "${1:-install}" in
  install) install ;;
  path) echo "$JAR" ;;
  -h | --help | help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (install | path)" ;;
esac
