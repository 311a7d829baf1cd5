#!/usr/bin/env bash
# Builds Beam's Prism runner (a Go program) from the Go module proxy into .cache/prism/bin.
# Beam's DirectRunner would download a prebuilt Prism at run time; offline that fails, so the
# project builds the same program, at the same version as the Python SDK, once.
#
# One patch: Prism 2.77's job service (which also serves artifact staging and the workers' Fn
# API on the same port) listens on ":PORT", every interface, and has no flag to change that
# (its flags: -job_port, -web_port, -serve_http, -jm_override, -idle_shutdown_timeout; the web
# UI, off as Beam starts Prism, would listen on localhost only). Anyone who can reach this
# machine could submit a job, i.e. run code here. The build therefore compiles a copy of the
# module's source in which that one line listens on 127.0.0.1. If the upstream line changed
# (another Beam version), the build fails loudly rather than ship an open port: look at
# jobservices/server.go again and update UPSTREAM/PATCHED below.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEAM_VERSION="$(sed -n 's/^apache-beam==//p' "$ROOT/requirements.txt")"
BIN="$ROOT/.cache/prism/bin/prism"
PATCH_ID="loopback-1"  # bump when the patch changes: an installed binary without it is rebuilt
STAMP="$BEAM_VERSION+$PATCH_ID"
SERVER_GO="go/pkg/beam/runners/prism/internal/jobservices/server.go"
UPSTREAM='lis, err := net.Listen("tcp", fmt.Sprintf(":%d", port))'
PATCHED='lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)) // streamml: loopback only'

fail() { echo "prism.sh: $*" >&2; exit 1; }

case "${1:-}" in
  install)
    if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null)" = "$STAMP" ]; then exit 0; fi
    PATH="$PATH:/usr/local/go/bin"  # where this machine's Go lives, in case PATH lacks it
    command -v go >/dev/null || fail "Go is needed to build Prism (apt-get install golang)"
    echo "prism.sh: building Prism v$BEAM_VERSION (job service on 127.0.0.1) from the Go module proxy (a few minutes, once)" >&2
    MODULE="github.com/apache/beam/sdks/v2@v$BEAM_VERSION"
    DIR="$(go mod download -json "$MODULE" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [ -n "$DIR" ] && [ -f "$DIR/$SERVER_GO" ] || fail "could not download $MODULE"
    # A fresh copy each time (the module cache is read-only): go.mod, go.sum and the Go SDK.
    SRC="$ROOT/.cache/prism/src"
    rm -rf "$SRC"
    mkdir -p "$SRC"
    cp -R "$DIR/go.mod" "$DIR/go.sum" "$DIR/go" "$SRC/"
    chmod -R u+w "$SRC"
    [ "$(grep -cF "$UPSTREAM" "$SRC/$SERVER_GO")" = 1 ] \
      || fail "the line to patch is not in $SERVER_GO of Beam $BEAM_VERSION (exactly once): '$UPSTREAM'; Prism would listen on every interface, refusing to build"
    SOURCE="$(cat "$SRC/$SERVER_GO")"
    printf '%s\n' "${SOURCE/"$UPSTREAM"/"$PATCHED"}" > "$SRC/$SERVER_GO"  # quoted: literal text
    grep -qF "$PATCHED" "$SRC/$SERVER_GO" && ! grep -qF "$UPSTREAM" "$SRC/$SERVER_GO" \
      || fail "patching $SERVER_GO failed"
    mkdir -p "$(dirname "$BIN")"
    (cd "$SRC" && go build -o "$BIN.new" ./go/cmd/prism) || fail "go build of the patched Prism failed"
    mv -f "$BIN.new" "$BIN"  # atomic: a running Prism keeps its old file
    echo "$STAMP" > "$BIN.version"
    rm -rf "$SRC"
    ;;
  path) echo "$BIN" ;;
  *) echo "usage: scripts/prism.sh install|path" >&2; exit 2 ;;
esac
