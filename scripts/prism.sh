#!/usr/bin/env bash
# Builds Beam's Prism runner (a Go program) from the Go module proxy into .cache/prism/bin.
# Beam's DirectRunner would download a prebuilt Prism at run time; offline that fails, so the
# project builds the same program, at the same version as the Python SDK, once.
#
# Three patches, each of one line; if an upstream line changed (another Beam version), the build
# fails loudly rather than build something else: look at the file again and update the
# UPSTREAM/PATCHED pair below.
#
# 1. Loopback. Prism 2.77's job service (which also serves artifact staging and the workers'
#    Fn API on the same port) listens on ":PORT", every interface, and has no flag to change
#    that (its flags: -job_port, -web_port, -serve_http, -jm_override, -idle_shutdown_timeout;
#    the web UI, off as Beam starts Prism, would listen on localhost only). Anyone who can
#    reach this machine could submit a job, i.e. run code here. The patched line listens on
#    127.0.0.1.
# 2. A busy loop. `stage.Execute` waits for a bundle in a `select` that has a case for its
#    data channel; once that channel is closed (all data sent) the case is always ready, so
#    until the SDK worker answers, the loop spins a core per bundle in flight. Measured with
#    perf on a live job: Prism at 120% CPU on 2 cores, a quarter of it in `selectgo` under
#    `stage.Execute`, starving the Python worker. The patch sets the channel to nil once
#    closed (a nil channel is never ready), so the loop sleeps until the answer or a progress
#    tick.
# 3. Timer holds. An event-time timer may hold the output watermark earlier than it fires
#    (the Fn API timer's hold timestamp; Java's `withOutputTimestamp`; `transforms.eventtime`
#    sets one). Set again at the same firing time with another hold, the element that fires is
#    the first one pushed, which carries the old hold, while the hold accounting already moved
#    to the new one: at the bundle's end Prism released the old hold and panicked ("negative
#    watermark hold count"). The patched line releases the hold the timer was last set with.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEAM_VERSION="$(sed -n 's/^apache-beam==//p' "$ROOT/requirements.txt")"
BIN="$ROOT/.cache/prism/bin/prism"
PATCH_ID="loopback-1+nospin-1+holds-1"  # bump when a patch changes: an installed binary without it is rebuilt
STAMP="$BEAM_VERSION+$PATCH_ID"
SERVER_GO="go/pkg/beam/runners/prism/internal/jobservices/server.go"
UPSTREAM='lis, err := net.Listen("tcp", fmt.Sprintf(":%d", port))'
PATCHED='lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)) // streamml: loopback only'
STAGE_GO="go/pkg/beam/runners/prism/internal/stage.go"
STAGE_UPSTREAM='		case <-dataReady:'
STAGE_PATCHED='		case <-dataReady:
			dataReady = nil // streamml: closed, it would be ready forever: the loop would spin'

EM_GO="go/pkg/beam/runners/prism/internal/engine/elementmanager.go"
EM_UPSTREAM='				holdsInBundle[e.holdTimestamp]++'
EM_PATCHED='				holdsInBundle[lastSet.hold]++ // streamml: the hold as last set, not the one of this element'

fail() { echo "prism.sh: $*" >&2; exit 1; }

# patch_line FILE UPSTREAM PATCHED WHY: replaces the one line UPSTREAM of $SRC/FILE by PATCHED.
patch_line() {
  local file="$SRC/$1" upstream="$2" patched="$3" why="$4" source
  [ "$(grep -cF "$upstream" "$file")" = 1 ] \
    || fail "the line to patch is not in $1 of Beam $BEAM_VERSION (exactly once): '$upstream'; $why, refusing to build"
  source="$(cat "$file")"
  printf '%s\n' "${source/"$upstream"/"$patched"}" > "$file"  # quoted: literal text
  grep -qF "$patched" "$file" || fail "patching $1 failed"
}

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
    patch_line "$SERVER_GO" "$UPSTREAM" "$PATCHED" "Prism would listen on every interface"
    patch_line "$STAGE_GO" "$STAGE_UPSTREAM" "$STAGE_PATCHED" "Prism would spin a core per bundle in flight"
    patch_line "$EM_GO" "$EM_UPSTREAM" "$EM_PATCHED" "Prism would panic on a timer set again with another hold"
    mkdir -p "$(dirname "$BIN")"
    (cd "$SRC" && go build -o "$BIN.new" ./go/cmd/prism) || fail "go build of the patched Prism failed"
    mv -f "$BIN.new" "$BIN"  # atomic: a running Prism keeps its old file
    echo "$STAMP" > "$BIN.version"
    rm -rf "$SRC"
    ;;
  path) echo "$BIN" ;;
  *) echo "usage: scripts/prism.sh install|path" >&2; exit 2 ;;
esac
