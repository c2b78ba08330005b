#!/usr/bin/env bash
# Installs Azurite (npm package azurite) into a local prefix under the emulator
# dir and starts its Blob service on 127.0.0.1:${AZURITE_PORT:-10000}, with the
# well-known dev account devstoreaccount1. Safe to run twice: if Azurite already
# answers on the port, nothing is done. Azurite 3.35.0 supports Blob Batch
# (POST ?comp=batch), so batch deletes can be tested here.
set -euo pipefail

port="${AZURITE_PORT:-10000}"
dir="${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}"
prefix="$dir/azurite"
bin="$prefix/node_modules/.bin/azurite-blob"
endpoint="http://127.0.0.1:$port/devstoreaccount1"
# Pinned so every machine tests against the same emulator; override to try another.
azurite_version="${AZURITE_VERSION:-3.35.0}"

# An anonymous request is refused (403), but the Server header names Azurite.
# (Output is captured, not piped into grep -q: with pipefail, grep quitting
# early can fail curl with SIGPIPE and so the whole check.)
answers() {
    local headers
    headers="$(curl -s -o /dev/null -D - --max-time 2 "$endpoint?comp=list" || true)"
    grep -qi '^server: azurite-blob' <<<"$headers"
}

if answers; then
    echo "azurite: already running at $endpoint"
    exit 0
fi

if [ ! -x "$bin" ]; then
    echo "azurite: installing azurite@$azurite_version into $prefix"
    mkdir -p "$prefix"
    # npm refuses to install a package into a folder whose package.json (or,
    # lacking one, whose folder name) is the package's own name, "azurite".
    [ -f "$prefix/package.json" ] ||
        echo '{"name": "registry-gc-emulators", "private": true}' >"$prefix/package.json"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$azurite_version"
fi

mkdir -p "$prefix/data"
# --skipApiVersionCheck: SDKs newer than this Azurite send API versions it does
# not know yet. --loose: ignore headers it does not implement instead of failing.
# --disableTelemetry: the machine has no network to send it to anyway.
nohup "$bin" --blobHost 127.0.0.1 --blobPort "$port" --location "$prefix/data" \
    --skipApiVersionCheck --loose --disableTelemetry >"$dir/azurite.log" 2>&1 &
echo $! >"$dir/azurite.pid"

# shellcheck source=/dev/null
. "$(dirname "$0")/../wait.sh"
wait_until_answers azurite 60 "azurite $("$bin" --version): Blob endpoint $endpoint (log $dir/azurite.log)"
