#!/usr/bin/env bash
# Validates examples/gen_registry.rs against the real registry (distribution 2.8.2,
# /usr/bin/docker-registry):
#
#   1. generates a small tree (~2,000 keys) with --ops-log, twice with the same seed
#      (the two trees must be identical: determinism);
#   2. replays the generator's own operations (blob uploads, manifest PUTs by tag and by
#      digest, DELETEs by digest, abandoned chunked uploads) through the real registry's HTTP
#      API into an empty filesystem root;
#   3. compares (bench/gen_compare_trees.py): key shapes against the replayed tree and the
#      committed fixture tests/fixtures/sample-registry (written by the real registry through
#      its API); the generated and replayed trees key for key, byte for byte, directory for
#      directory; link files; blob digests; manifests; uploads; and the generator's expected
#      garbage counts against an independent recount;
#   4. runs the reference collector (`docker-registry garbage-collect --dry-run`) on both
#      trees: it must not abort, and in default mode it must find exactly the expected
#      number of garbage blobs;
#   5. if a registry-gc binary is around ($REGISTRY_GC, default
#      $CARGO_TARGET_DIR/release/registry-gc), runs its dry run in both modes and compares
#      "would delete: N unreferenced blobs" with the expected counts.
#
# Usage: bash bench/validate_generator.sh        (KEYS=2000 SEED=42 KEEP=1 to keep the work dir)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-bench}
KEYS=${KEYS:-2000}
SEED=${SEED:-42}
GARBAGE=${GARBAGE:-0.3}
REGISTRY_BIN=/usr/bin/docker-registry
W=$(mktemp -d /tmp/gen-validate.XXXXXX)
REG_PID=

cleanup() {
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

fail() { echo "FAIL $*"; exit 1; }

[ -x "$REGISTRY_BIN" ] || fail "$REGISTRY_BIN missing (apt-get install docker-registry)"

echo "== building the generator"
(cd "$REPO" && cargo build --release --example gen_registry 2>&1 | tail -1)
GEN=$CARGO_TARGET_DIR/release/examples/gen_registry

echo "== generating $KEYS keys (seed $SEED, garbage $GARBAGE)"
"$GEN" --out "$W/gen" --keys "$KEYS" --seed "$SEED" --garbage "$GARBAGE" --ops-log "$W/ops.jsonl" --summary "$W/summary.json" >/dev/null
cat "$W/summary.json"
"$GEN" --out "$W/gen2" --keys "$KEYS" --seed "$SEED" --garbage "$GARBAGE" --summary "$W/summary2.json" >/dev/null
if diff -r "$W/gen" "$W/gen2" >/dev/null && \
   python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); [d.pop(k) for d in (a,b) for k in ("root","simulate_seconds","write_seconds")]; sys.exit(a!=b)' "$W/summary.json" "$W/summary2.json"; then
    echo "PASS determinism: same seed, identical trees and summaries"
else
    fail "determinism: two runs with seed $SEED differ"
fi
rm -rf "$W/gen2"

echo "== replaying the generator's operations through the real registry"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/real"
ref_config "$W/config.yml" "  filesystem:
    rootdirectory: \"$W/real\"" "127.0.0.1:$PORT" gen-registry-validation
env -u AWS_CA_BUNDLE "$REGISTRY_BIN" serve "$W/config.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    if curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null || { cat "$W/registry.log"; fail "registry did not start"; }
START=$(date +%s.%N)
python3 "$HERE/gen_replay_ops.py" --ops "$W/ops.jsonl" --gen-root "$W/gen" --url "http://127.0.0.1:$PORT" --uuid-map "$W/uuids.json"
echo "replay took $(python3 -c "print(round($(date +%s.%N)-$START,1))")s"
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=

echo "== comparing"
set +e
python3 "$HERE/gen_compare_trees.py" --gen "$W/gen" --real "$REPO/tests/fixtures/sample-registry" \
    --replay "$W/real" --uuid-map "$W/uuids.json" --summary "$W/summary.json"
CMP=$?
set -e

echo "== reference collector (docker-registry garbage-collect --dry-run)"
EXP_D=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["expected_garbage_blobs_default"])' "$W/summary.json")
EXP_M=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["expected_garbage_blobs_delete_untagged"])' "$W/summary.json")
REF_OK=0
for tree in gen real; do
    sed "s#rootdirectory: \"$W/real\"#rootdirectory: \"$W/$tree\"#" "$W/config.yml" >"$W/gc-$tree.yml"
    for mode in default delete-untagged; do
        flag=; [ "$mode" = delete-untagged ] && flag=--delete-untagged
        if env -u AWS_CA_BUNDLE "$REGISTRY_BIN" garbage-collect --dry-run $flag "$W/gc-$tree.yml" >"$W/ref-$tree-$mode.log" 2>&1; then
            line=$(grep -E "blobs marked" "$W/ref-$tree-$mode.log" | tail -1)
            n=$(echo "$line" | sed -E 's/.* ([0-9]+) blobs and .*/\1/')
            echo "reference $mode on $tree tree: $line"
            if [ "$mode" = default ]; then
                if [ "$n" = "$EXP_D" ]; then echo "PASS reference default on $tree: $n eligible blobs = expected $EXP_D"
                else echo "FAIL reference default on $tree: $n eligible blobs, expected $EXP_D"; REF_OK=1; fi
            else
                echo "INFO reference --delete-untagged on $tree: $n eligible blobs (registry-gc semantics expect $EXP_M; 2.8.2 also deletes index children's layers and untagged referrers)"
            fi
        else
            echo "FAIL reference $mode on $tree tree aborted:"; tail -5 "$W/ref-$tree-$mode.log"; REF_OK=1
        fi
    done
done

RGC=${REGISTRY_GC:-$CARGO_TARGET_DIR/release/registry-gc}
RGC_OK=0
if [ -x "$RGC" ]; then
    echo "== registry-gc dry run ($RGC)"
    for mode in default delete-untagged; do
        flag=; exp=$EXP_D
        [ "$mode" = delete-untagged ] && { flag=--delete-untagged; exp=$EXP_M; }
        out=$("$RGC" gc --dry-run $flag --min-age 0s "$W/gen" 2>&1) || { echo "$out" | tail -5; echo "FAIL registry-gc $mode errored"; RGC_OK=1; continue; }
        n=$(echo "$out" | sed -nE 's/.*would delete: ([0-9]+) unreferenced blobs.*/\1/p')
        n=${n:-0}
        if [ "$n" = "$exp" ]; then echo "PASS registry-gc $mode: would delete $n unreferenced blobs = expected $exp"
        else echo "FAIL registry-gc $mode: would delete $n unreferenced blobs, expected $exp"; RGC_OK=1; fi
    done
else
    echo "INFO no registry-gc binary at $RGC: skipped"
fi

if [ $CMP -ne 0 ] || [ $REF_OK -ne 0 ] || [ $RGC_OK -ne 0 ]; then
    echo "VALIDATION FAILED"; exit 1
fi
echo "VALIDATION PASSED"
