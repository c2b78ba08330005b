#!/usr/bin/env bash
# Installs LocalStack (PyPI localstack-core) and runs it on the host, without
# Docker, as a second S3 emulator on 127.0.0.1:${LOCALSTACK_PORT:-4566}, S3 only.
# Safe to run twice: if LocalStack already answers on the port, nothing is done.
# See README.md beside this file for why each setting is there.
set -euo pipefail

port="${LOCALSTACK_PORT:-4566}"
dir="${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}"
venv="$dir/localstack/venv"
endpoint="http://127.0.0.1:$port"
# Pinned so every machine tests against the same emulator; override to try another.
localstack_version="${LOCALSTACK_VERSION:-2026.3.0}"

# The gateway (and so the health page) comes up only once S3 is loaded.
answers() {
    local health
    health="$(curl -fs --max-time 2 "$endpoint/_localstack/health" || true)"
    [[ "$health" == *'"s3"'* ]]
}

if answers; then
    echo "localstack: already running at $endpoint"
    exit 0
fi

# localstack-core 2026.3.0 says Requires-Python >=3.10 but imports
# warnings.deprecated, which is new in Python 3.13. Debian 12 has only 3.11;
# these machines carry 3.13 under pyenv (not on PATH: pyenv's python3.13 shim
# refuses to run while 3.11 is selected), so look there too.
find_python() {
    local c
    for c in ${LOCALSTACK_PYTHON:-} "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3 \
        python3.14 python3.13 python3; do
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

mkdir -p "$dir/localstack/fs"
if ! "$venv/bin/python" -c 'import localstack' 2>/dev/null; then
    if ! python="$(find_python)"; then
        echo "localstack: needs Python >= 3.13 (set LOCALSTACK_PYTHON); none found" >&2
        exit 1
    fi
    echo "localstack: installing localstack-core[runtime]==$localstack_version with $python into $venv"
    "$python" -m venv "$venv"
    # cbor2 5.7 dropped cbor2._decoder, which LocalStack's request parser
    # imports; pyOpenSSL 25 dropped X509.add_extensions, which its self-signed
    # certificate code calls; service_identity lets Twisted's TLS check hostnames.
    "$venv/bin/pip" install -q "localstack-core[runtime]==$localstack_version" \
        'cbor2<5.7' 'pyopenssl==24.2.1' service_identity
fi

# OVERRIDE_IN_DOCKER=0: these machines have /.dockerenv, so LocalStack would
#   think it is in its container (state in /var/lib/localstack, binds 0.0.0.0).
# GATEWAY_SERVER=hypercorn: the default twisted server ignores the host part of
#   GATEWAY_LISTEN for IPv4 and listens on 0.0.0.0; hypercorn honours it.
# DNS_ADDRESS=0: no DNS server on port 53. DISABLE_EVENTS=1: no analytics calls.
# SKIP_SSL_CERT_DOWNLOAD=1: make a self-signed cert instead of downloading one
#   (the port also speaks https; tests use http).
# EAGER_SERVICE_LOADING=1: load S3 now, not on the first request of a test.
# FILESYSTEM_ROOT: its config/cache/tmp dirs. Object data still goes to the
#   hard-coded /tmp/localstack-s3-storage.
(
    cd "$dir/localstack"
    OVERRIDE_IN_DOCKER=0 GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" \
        DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
        SERVICES=s3 EAGER_SERVICE_LOADING=1 FILESYSTEM_ROOT="$dir/localstack/fs" \
        nohup "$venv/bin/python" -m localstack.runtime.main >"$dir/localstack.log" 2>&1 &
    echo $! >"$dir/localstack.pid"
)

# shellcheck source=/dev/null
. "$(dirname "$0")/../backends/wait.sh"
wait_until_answers localstack 120 "localstack $localstack_version: S3 endpoint $endpoint (log $dir/localstack.log)"
