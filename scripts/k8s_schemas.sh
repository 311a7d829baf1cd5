#!/usr/bin/env bash
# Fetches the schemas tests/test_deploy.py validates the Kubernetes manifests against, so that
# the tests need no network: the Flink Kubernetes operator's API jar (its FlinkDeployment CRD)
# from Maven Central into .cache/k8s/. The core kinds' schemas ship with kubernetes-validate.
# Idempotent: does nothing when the jar is there. Run by scripts/setup.sh.
#
#   bash scripts/k8s_schemas.sh          fetch if missing
#   bash scripts/k8s_schemas.sh path     print the jar's path
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

OPERATOR_VERSION=1.10.0        # Flink Kubernetes operator of deploy/k8s (tests/test_deploy.py)
OPERATOR_API=org.apache.flink:flink-kubernetes-operator-api:${OPERATOR_VERSION}
CRD=META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml
DEP_PLUGIN_VERSION=3.6.1       # maven-dependency-plugin, as in scripts/flink.sh

CACHE_DIR=$ROOT/.cache/k8s
JAR=$CACHE_DIR/flink-kubernetes-operator-api-${OPERATOR_VERSION}.jar

LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock

# The jar is there and holds the CRD (not a partial download).
has_crd() {
  [[ -s $1 ]] && python3 - "$1" "$CRD" <<'PY' 2>/dev/null
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.getinfo(sys.argv[2])
PY
}

install() {
  has_crd "$JAR" && return 0
  mkdir -p "$CACHE_DIR"
  lock "$CACHE_DIR/.lock" 8
  has_crd "$JAR" && return 0
  need mvn "Maven is needed to fetch ${OPERATOR_API} from Maven Central"
  need python3 "Python 3 is needed to check the fetched jar"
  local t0=$SECONDS tmp="$CACHE_DIR/tmp.$$"
  log "fetching ${OPERATOR_API} from Maven Central into .cache/k8s ..."
  rm -rf "$tmp"
  if ! mvn -B -q -Dstyle.color=never \
      "org.apache.maven.plugins:maven-dependency-plugin:${DEP_PLUGIN_VERSION}:copy" \
      -Dartifact="$OPERATOR_API" -DoutputDirectory="$tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
    tail -n 40 "$CACHE_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch ${OPERATOR_API} (full output: .cache/k8s/mvn.log)"
  fi
  has_crd "$tmp/${JAR##*/}" || { rm -rf "$tmp"; die "the fetched ${JAR##*/} has no ${CRD}"; }
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
