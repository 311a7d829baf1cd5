#!/usr/bin/env bash
# The peer of the Kafka benchmark: .venv-peer, a separate virtualenv with Quix Streams, for
# benchmarks/peer_quix.py (the reduced job written with Quix Streams; the `peer:quix` rows of
# `python -m benchmarks.kafka_latency`). Separate because quixstreams 3.28.1 needs
# confluent-kafka < 2.13 while the project pins 2.16.1. Nothing is downloaded at run time.
#
#   bash scripts/peer.sh install          .venv-peer from requirements-peer.txt (once; idempotent)
#   bash scripts/peer.sh status           exit 0 if .venv-peer is installed and up to date
#   bash scripts/peer.sh run ARGS...      .venv-peer's python with the project on PYTHONPATH
#                                         (e.g. run -m benchmarks.peer_quix --help)
#   bash scripts/peer.sh python           print the path of .venv-peer's python
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

PYTHON=${PYTHON:-python3.11}
VENV=$ROOT/.venv-peer
REQS=$ROOT/requirements-peer.txt
LOCK_WAIT_S=600
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"  # log, die, need, lock

usage() {
  cat <<EOF
Usage: bash scripts/peer.sh COMMAND

.venv-peer: Quix Streams and the pins of requirements-peer.txt, for benchmarks/peer_quix.py.
The project is not installed there (its setup.py asks for apache-beam); its Beam-free modules
are put on PYTHONPATH by 'run'.

Commands:
  install       create .venv-peer (${PYTHON} -m venv) and install requirements-peer.txt;
                skipped when already done for this requirements-peer.txt
  status        exit 0 if .venv-peer is installed and up to date
  run ARGS...   run .venv-peer's python with ARGS, the checkout on PYTHONPATH
  python        print the path of .venv-peer's python

Environment:
  PYTHON        the Python 3.11 that makes .venv-peer [${PYTHON}]
EOF
}

venv_stamp() { echo "$VENV/.installed-$(sha256sum <"$REQS" | cut -c1-16)"; }

venv_installed() { [[ -f $(venv_stamp) && -x $VENV/bin/python ]]; }

cmd_install() {
  venv_installed && { log ".venv-peer already installed"; return 0; }
  need "$PYTHON" "Python 3.11 is needed for .venv-peer (set PYTHON=...)"
  mkdir -p "$ROOT/.cache"
  lock "$ROOT/.cache/peer-install.lock" 8  # concurrent installs (parallel test workers)
  venv_installed && return 0
  local t0=$SECONDS
  log "creating .venv-peer with requirements-peer.txt (quixstreams) ..."
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >"$VENV/pip.log" 2>&1 || true
  if ! "$VENV/bin/pip" install -q -r "$REQS" >>"$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log" >&2
    die "pip could not install requirements-peer.txt into .venv-peer (log: .venv-peer/pip.log)"
  fi
  local checked
  checked=$("$VENV/bin/pip" check 2>&1) || { echo "$checked" >&2; die "pip check failed in .venv-peer"; }
  rm -f "$VENV"/.installed-* && touch "$(venv_stamp)"
  log ".venv-peer ready in $((SECONDS - t0)) s"
}

cmd_run() {
  venv_installed || die ".venv-peer is not installed: bash scripts/peer.sh install"
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" "$@"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    install) cmd_install ;;
    status) venv_installed ;;
    run) shift; cmd_run "$@" ;;
    python) echo "$VENV/bin/python" ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
