# shellcheck shell=bash
# Shell helpers shared by scripts/kafka.sh and scripts/flink.sh (sourced, not run).
# The sourcing script sets LOCK_WAIT_S (how long `lock` waits) before calling `lock`, and
# DEP_PLUGIN_VERSION before calling `pom_build`.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

# Take an exclusive lock on a file for the rest of this process (serialises
# concurrent `start`s, e.g. from parallel test workers). No-op without flock.
LOCKED=" "
lock() {
  local file=$1 fd=$2 wait_s=${LOCK_WAIT_S:-600}
  [[ $LOCKED == *" $fd "* ]] && return 0
  command -v flock >/dev/null 2>&1 || return 0
  eval "exec ${fd}>\"\$file\""
  flock -w "$wait_s" "$fd" || die "could not lock $file within $wait_s s"
  LOCKED+="$fd "
}

# The <build> of a pom that only fetches jars: the pinned maven-dependency-plugin.
pom_build() {
  cat <<EOF
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>${DEP_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
EOF
}
