#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the project installed (editable). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
stamp=".venv/.installed-$(cat requirements.txt setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  rm -f .venv/.installed-* && touch "$stamp"
fi
bash scripts/prism.sh install
