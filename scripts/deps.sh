#!/usr/bin/env bash
# Installs everything the tests and the local stack need, into the project's
# cache directory (.cache/), through the package registries only:
#   - Go modules (go mod download)
#   - SpiceDB v1.56.2   (go install, ~3-5 min on 2 cores the first time)
#   - nats-server v2.15.2 (go install)
#   - indigo's relay (cmd/relay) at the indigo version go.mod pins (go install
#     with cgo, ~3 min on 2 cores the first time; a stamp file .cache/bin/relay.version
#     records the version, since the binary has no version command)
#   - the sqlite3 CLI (Debian's sqlite3 package, only when absent): relaytest
#     registers localhost PDSs in the relay's SQLite host table with it
#   - PostgreSQL >= 15 (Debian's postgresql package, only when absent; the
#     tests start throwaway clusters of their own, never the system one)
#   - Node 22 + the reference PDS from npm (e2e/pds/setup.sh, ~90 s the first time)
# Idempotent: a second run takes a second or two.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.cache/bin"
mkdir -p "$BIN"
export GOBIN="$BIN"

SPICEDB_VERSION=v1.56.2
NATS_VERSION=v2.15.2
GOLANGCI_VERSION=v2.15.0
# The relay is built at the indigo version the module depends on, so the
# relay and the project's own indigo code agree.
INDIGO_VERSION=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/bluesky-social/indigo)

step() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)

step "Go modules"
(cd "$ROOT" && go mod download)

want() { # want BIN VERSION-SUBSTRING VERSION-COMMAND...
  local bin="$1" ver="$2"; shift 2
  [[ -x "$BIN/$bin" ]] && "$BIN/$bin" "$@" 2>&1 | grep -q -- "${ver#v}"
}

step "SpiceDB $SPICEDB_VERSION"
if want spicedb "$SPICEDB_VERSION" version; then
  echo "cached: $BIN/spicedb" >&2
else
  CGO_ENABLED=1 go install "github.com/authzed/spicedb/cmd/spicedb@$SPICEDB_VERSION"
fi

step "nats-server $NATS_VERSION"
if want nats-server "$NATS_VERSION" --version; then
  echo "cached: $BIN/nats-server" >&2
else
  go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
fi

step "indigo relay $INDIGO_VERSION"
# `relay` has no version command: the stamp next to it says what it was built
# from, and is written only after a successful install.
if [[ -x "$BIN/relay" && "$(cat "$BIN/relay.version" 2>/dev/null)" == "$INDIGO_VERSION" ]]; then
  echo "cached: $BIN/relay" >&2
else
  rm -f "$BIN/relay.version"
  CGO_ENABLED=1 go install "github.com/bluesky-social/indigo/cmd/relay@$INDIGO_VERSION"
  echo "$INDIGO_VERSION" >"$BIN/relay.version"
fi

SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

step "sqlite3 CLI (OS package)"
if command -v sqlite3 >/dev/null; then
  echo "found: $(command -v sqlite3)" >&2
else
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sqlite3 >/dev/null
  command -v sqlite3 >/dev/null || { echo "sqlite3 not found after apt-get install sqlite3" >&2; exit 1; }
fi

if [[ "${DEPS_PG:-1}" == 1 ]]; then
  step "PostgreSQL >= 15 (OS package)"
  pg_ok() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
      [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_isready" ]] || continue
      (( $(basename "$(dirname "$d")") >= 15 )) && { echo "found: $d" >&2; return 0; }
    done
    return 1
  }
  if ! pg_ok; then
    # The package's own cluster is not used; a temporary policy-rc.d keeps
    # it from starting.
    policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    [[ -z "$policy" ]] || $SUDO rm -f "$policy"
    pg_ok || { echo "PostgreSQL >= 15 not found after apt-get install postgresql" >&2; exit 1; }
  fi
fi

if [[ "${DEPS_LINT:-0}" == 1 ]]; then
  step "golangci-lint $GOLANGCI_VERSION"
  if want golangci-lint "$GOLANGCI_VERSION" version; then
    echo "cached: $BIN/golangci-lint" >&2
  else
    go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_VERSION"
  fi
fi

if [[ "${DEPS_PDS:-1}" == 1 ]]; then
  step "reference PDS (Node 22 + @atproto/pds from npm)"
  "$ROOT/e2e/pds/setup.sh"
fi

echo "deps ready in $(( $(date +%s) - t0 ))s: $BIN" >&2
