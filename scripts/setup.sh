#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the project installed (editable), and fetches
# what the tests need from the registries (nothing is downloaded while they run). Idempotent.
#
#   bash scripts/setup.sh            what the main job and the tests need
#   bash scripts/setup.sh --flink    and Flink's cluster (scripts/flink.sh install), beside the rest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
started=$SECONDS
# SeaweedFS (the data lake's S3 store, tests/test_lake.py) builds from the Go module proxy in a few
# minutes on a fresh machine: it builds meanwhile, and set-up waits for it at the end.
mkdir -p .cache
bash scripts/s3.sh install >.cache/s3-install.log 2>&1 &
s3_install=$!
# The jars from Maven Central, one fetch at a time: Maven 3.8 does not lock its local repository.
bash scripts/k8s_schemas.sh install
bash scripts/avro_tools.sh install
bash scripts/schema_registry.sh install  # Apicurio Registry (tests/test_schema_registry.py)
# Flink's install (.venv-flink, its files from PyPI, the job server's jars through mvn: one to three
# minutes) runs beside .venv's and Prism's, after the other Maven fetches.
flink_install=
if [ "${1:-}" = "--flink" ]; then
  bash scripts/flink.sh install >.cache/flink-install.log 2>&1 &
  flink_install=$!
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-test.txt setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # The exact pins (requirements-test.txt includes requirements.txt), then the project with
  # its serving and test extras and those pins as constraints: pip fails if setup.py's ranges refuse a pin.
  .venv/bin/pip install -q -r requirements-test.txt
  .venv/bin/pip install -q -e ".[serving,lake,test]" -c requirements-test.txt
  checked=$(.venv/bin/pip check) || { echo "$checked" >&2; exit 1; }
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "setup.sh: .venv ready after $((SECONDS - started)) s"
# vegeta, the serving benchmark's load generator (tests/test_serving_benchmark.py), from the Go
# module proxy, built beside Prism.
.venv/bin/python -c "from benchmarks.serving import vegeta; vegeta()" >.cache/vegeta-install.log 2>&1 &
vegeta_install=$!
bash scripts/prism.sh install
wait "$vegeta_install" || { cat .cache/vegeta-install.log >&2; echo "setup.sh: building vegeta failed" >&2; exit 1; }
wait "$s3_install" || { cat .cache/s3-install.log >&2; echo "setup.sh: building SeaweedFS failed" >&2; exit 1; }
if [ -n "$flink_install" ]; then
  wait "$flink_install" || { tail -n 30 .cache/flink-install.log >&2; echo "setup.sh: installing Flink failed" >&2; exit 1; }
fi
echo "setup.sh: done in $((SECONDS - started)) s"
