#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the project installed (editable), and fetches
# what the tests need from the registries (nothing is downloaded while they run). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
# SeaweedFS (the data lake's S3 store, tests/test_lake.py) builds from the Go module proxy in a few
# minutes on a fresh machine: it builds meanwhile, and set-up waits for it at the end.
mkdir -p .cache
bash scripts/s3.sh install >.cache/s3-install.log 2>&1 &
s3_install=$!
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
bash scripts/k8s_schemas.sh install
bash scripts/avro_tools.sh install
bash scripts/prism.sh install
bash scripts/schema_registry.sh install  # Apicurio Registry (tests/test_schema_registry.py)
wait "$s3_install" || { cat .cache/s3-install.log >&2; echo "setup.sh: building SeaweedFS failed" >&2; exit 1; }
