#!/usr/bin/env bash
# How registry-gc builds list one registry on S3: dry runs of each build, in
# both modes, on one moto bucket behind bench/proxy.py (20 ms a request), the
# builds alternating, twice. Prints each run's wall time, phase times and
# requests, then, from the proxy's log, the LIST requests (delimiter ones
# apart), the prefixes listed, and the longest run of pages listed one after
# another under one prefix: what a listing waits for on S3. Used for the
# listing splits (BENCHMARKS.md, sessions 13 and 14).
#
# usage: bench/listing-runs.sh TREE LABEL BINARY...
#   TREE     a registry tree (docker/registry/v2/...), uploaded once
# environment: BUCKET (use this bucket as it is, no upload), KEEP=1 (leave the
# bucket), S3_PORT (moto, 9000), REGISTRY_GC_EMULATOR_DIR. The runs share the
# default manifest cache: run a build once first so that every run lists only.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
tree=$1; label=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
emu_dir=${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}
venv=$emu_dir/bench-venv
moto=http://127.0.0.1:${S3_PORT:-9000}
work=$(mktemp -d "/tmp/listing-runs-$label.XXXX")
if ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q boto3
fi
python3 "$here/proxy.py" --port 0 --port-file "$work/port" --upstream "$moto" --latency-ms 20 \
    --log "$work/proxy.log" 2>"$work/proxy.err" &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
if [ -n "${BUCKET:-}" ]; then
    bucket=$BUCKET
else
    bucket=listing-$(date +%s)
    "$venv/bin/python" "$here/helpers.py" upload --endpoint "$moto" --bucket "$bucket" --root r --threads 16 "$tree" >/dev/null
    echo "uploaded $tree to $bucket"
fi
for round in 1 2; do
    for bin in "$@"; do
        for mode in online offline; do
            extra=(); [ $mode = offline ] && extra=(--offline)
            run=$(basename "$bin")-$mode-$round
            curl -fsS -X POST "http://127.0.0.1:$port/__reset?label=$run" >/dev/null
            /usr/bin/time -f "%e" -o "$work/time" "$bin" gc --dry-run --min-age 0s -q "${extra[@]}" \
                --report "$work/$run.json" --endpoint "http://127.0.0.1:$port" --allow-http \
                --region us-east-1 -o access_key_id=test -o secret_access_key=test "s3://$bucket/r" \
                >/dev/null 2>"$work/$run.err" || true
            python3 - "$work/$run.json" "$run" "$(cat "$work/time")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
phases = {k: round(v, 2) for k, v in r["phase_seconds"].items() if v}
print(sys.argv[2], sys.argv[3], "s", phases, r["requests"])
PY
        done
    done
done
kill $proxy; wait $proxy 2>/dev/null || true
python3 "$here/chains.py" "$work/proxy.log"
[ -n "${KEEP:-}${BUCKET:-}" ] || "$venv/bin/python" "$here/helpers.py" rm-bucket --endpoint "$moto" --bucket "$bucket" >/dev/null 2>&1 || true
echo "logs in $work"
