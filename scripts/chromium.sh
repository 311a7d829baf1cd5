#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/test_dashboard.py drives it headless with
# Playwright's Python client: no browser is downloaded, the system's is used).
#
#   bash scripts/chromium.sh install    install the package if missing; prints CHROMIUM=PATH
#   bash scripts/chromium.sh status     exit 0 if it is installed
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CHROMIUM=/usr/bin/chromium
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, apt_install

case "${1:-}" in
  install)
    apt_install chromium fonts-dejavu-core
    [[ -x $CHROMIUM ]] || die "the chromium package installed no $CHROMIUM"
    echo "CHROMIUM=$CHROMIUM"
    ;;
  status) [[ -x $CHROMIUM ]] ;;
  *) echo "Usage: bash scripts/chromium.sh install|status" >&2; exit 2 ;;
esac
