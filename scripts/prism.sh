#!/usr/bin/env bash
# Builds Beam's Prism runner (a Go program) from the Go module proxy into .cache/prism/bin.
# Beam's DirectRunner would download a prebuilt Prism at run time; offline that fails, so the
# project builds the same program, at the same version as the Python SDK, once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEAM_VERSION="$(sed -n 's/^apache-beam==//p' "$ROOT/requirements.txt")"
BIN="$ROOT/.cache/prism/bin/prism"

case "${1:-}" in
  install)
    if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null)" = "$BEAM_VERSION" ]; then exit 0; fi
    PATH="$PATH:/usr/local/go/bin"  # where this machine's Go lives, in case PATH lacks it
    command -v go >/dev/null || { echo "prism.sh: Go is needed to build Prism (apt-get install golang)" >&2; exit 1; }
    echo "prism.sh: building Prism v$BEAM_VERSION from the Go module proxy (a few minutes, once)" >&2
    GOBIN="$ROOT/.cache/prism/bin" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION"
    echo "$BEAM_VERSION" > "$BIN.version"
    ;;
  path) echo "$BIN" ;;
  *) echo "usage: scripts/prism.sh install|path" >&2; exit 2 ;;
esac
