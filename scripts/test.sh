#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# --flink: Flink installs beside the rest of set-up, not in the tests' time (tests/test_flink.py).
bash scripts/setup.sh --flink
exec .venv/bin/python -m pytest "$@"
