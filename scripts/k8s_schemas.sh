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
source "$SCRIPT_DIR/lib.sh"  # die, maven_fetch

# Fetch the jar unless it is there and holds the CRD (not a partial download).
install() { maven_fetch "$OPERATOR_API" "$JAR" "$CRD"; }

case "${1:-install}" in
  install) install ;;
  path) echo "$JAR" ;;
  -h | --help | help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (install | path)" ;;
esac
