#!/usr/bin/env bash
# Installs moto's standalone server (PyPI moto[server]) and starts it as an S3
# emulator on 127.0.0.1:${S3_PORT:-9000}. moto lives in its own virtualenv under
# the emulator dir so the machine's Python is left alone. Safe to run twice: if
# something already answers as moto on the port, nothing is done.
set -euo pipefail

port="${S3_PORT:-9000}"
dir="${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}"
venv="$dir/moto/venv"
endpoint="http://127.0.0.1:$port"
# Pinned so every machine tests against the same emulator; override to try another.
moto_version="${MOTO_VERSION:-5.2.5}"

# /moto-api/ is moto's own dashboard: a 200 there means moto, not just any server.
answers() { curl -fs -o /dev/null --max-time 2 "$endpoint/moto-api/"; }

if answers; then
    echo "moto: already running at $endpoint"
    exit 0
fi

mkdir -p "$dir"
if [ ! -x "$venv/bin/moto_server" ]; then
    echo "moto: installing moto[server]==$moto_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "moto[server]==$moto_version"
fi

# -H 127.0.0.1: never listen beyond loopback. nohup: outlive this script.
nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
echo $! >"$dir/moto.pid"

# shellcheck source=/dev/null
. "$(dirname "$0")/../wait.sh"
wait_until_answers moto 60 "moto $("$venv/bin/pip" show moto | sed -n 's/^Version: //p'): S3 endpoint $endpoint (log $dir/moto.log)"
