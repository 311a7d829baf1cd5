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
source "$SCRIPT_DIR/lib.sh"  # die, maven_fetch

# Fetch the jar unless it is there and holds the tools' entry point (not a partial download).
install() { maven_fetch "$AVRO_TOOLS" "$JAR" "$MAIN_CLASS"; }

case "${1:-install}" in
  install) install ;;
  path) echo "$JAR" ;;
  -h | --help | help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (install | path)" ;;
esac
