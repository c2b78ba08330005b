#!/usr/bin/env bash
# Side-by-side benchmark: registry-gc vs the reference collector
# (`docker-registry garbage-collect`, distribution 2.8.2) on identical copies of
# one registry tree, on the filesystem and on S3 (moto behind a counting,
# latency-adding proxy). See bench/README.md.
#
#   bash bench/run.sh [options] DIR        DIR holds docker/registry/v2
#
# Options:
#   --latency-ms N      latency the proxy adds to every S3 request [20]
#   --modes LIST        default,untagged (untagged = --delete-untagged) [both]
#   --backends LIST     fs,s3 [both]
#   --cold              on fs, also run each pair with a cold page cache
#                       (drop_caches before each run; needs root)
#   --concurrency N     pass --concurrency N to registry-gc [its default]
#   --cached            on S3, also time registry-gc with a warm manifest cache
#                       (primed by a --dry-run on its own copy): "registry-gc-cached".
#                       Plain registry-gc runs always get a fresh, empty cache dir.
#   --offline           also time registry-gc --offline on its own copy (the
#                       reference's condition: the registry stopped, so no
#                       re-check before the sweep and no look after it):
#                       "registry-gc-offline"
#   --timeout SECS      stop a collector that runs longer than this [none]
#   --threads N         upload threads for seeding S3 [16]
#   --work DIR          where the copies go [$TMPDIR or /tmp]
#   --keep              keep the copies, the buckets and the work dir
#   --rev REV           build registry-gc from commit REV (git archive, so edits
#                       in progress in the work tree don't matter) instead of
#                       the work tree
#   -h, --help
#
# Environment: REGISTRY_GC_BIN (else built with cargo into /tmp/target-bench,
# or BENCH_TARGET_DIR), S3_PORT (moto's port, 9000), REGISTRY_GC_EMULATOR_DIR
# (where moto and the bench's Python venv live, /tmp/registry-gc-emulators).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

latency=20
modes=default,untagged
backends=fs,s3
cold=0
cached=0
offline=0
keep=0
concurrency=""
timeout_s=0
threads=16
rev=""
workbase=${TMPDIR:-/tmp}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "bench: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$here/common.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --latency-ms) latency=$2; shift 2 ;;
        --latency-ms=*) latency=${1#*=}; shift ;;
        --modes) modes=$2; shift 2 ;;
        --modes=*) modes=${1#*=}; shift ;;
        --backends) backends=$2; shift 2 ;;
        --backends=*) backends=${1#*=}; shift ;;
        --cold) cold=1; shift ;;
        --cached) cached=1; shift ;;
        --offline) offline=1; shift ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --work) workbase=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --rev) rev=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        --) shift; break ;;
        -*) echo "bench: unknown option $1" >&2; usage 2 ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || usage 2
src=$(realpath -- "$1")
[ -d "$src/docker/registry/v2" ] || die "$src has no docker/registry/v2"
[[ $latency =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--latency-ms must be a number"

mode_list=()
for m in ${modes//,/ }; do
    case "$m" in
        default) mode_list+=(default) ;;
        untagged|delete-untagged) mode_list+=(untagged) ;;
        *) die "unknown mode $m (default, untagged)" ;;
    esac
done
backend_list=()
for b in ${backends//,/ }; do
    case "$b" in fs|s3) backend_list+=("$b") ;; *) die "unknown backend $b (fs, s3)" ;; esac
done
has_backend() { [[ " ${backend_list[*]} " == *" $1 "* ]]; }

emu_dir=${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}
venv=$emu_dir/bench-venv
s3_port=${S3_PORT:-9000}
moto=http://127.0.0.1:$s3_port
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$workbase"
work=$(mktemp -d "$workbase/registry-gc-bench.XXXXXX")
mkdir -p "$work/runs" "$here/results"

proxy_pid=""
tool_pid=""
bucket=""
seq=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$tool_pid" ]; then
        pkill -TERM -P "$tool_pid" 2>/dev/null || true
        kill "$tool_pid" 2>/dev/null || true
    fi
    stop_proxy
    if [ -n "$bucket" ] && [ "$keep" = 0 ]; then
        "$venv/bin/python" "$here/helpers.py" rm-bucket --endpoint "$moto" --bucket "$bucket" >/dev/null 2>&1 || true
    fi
    if [ "$keep" = 0 ]; then
        rm -rf -- "$work"
    else
        echo "bench: kept $work${bucket:+ and bucket $bucket on $moto}" >&2
    fi
    exit "$rc"
}
stop_proxy() {
    if [ -n "$proxy_pid" ]; then
        kill -TERM "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
step_t0=$(now)
step() { # prints how long the previous step took, then names the next
    local t; t=$(now)
    printf '   (%s s)\n' "$(elapsed "$step_t0" "$t")" >&2
    step_t0=$t
    say "$*"
}

# ---- tools ------------------------------------------------------------------
say "tools"
if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time (apt)" >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
command -v docker-registry >/dev/null || die "docker-registry not found (apt-get install docker-registry)"
ref_version=$(env -u AWS_CA_BUNDLE docker-registry --version | awk '{print $3}')

target=${BENCH_TARGET_DIR:-/tmp/target-bench}
if [ -n "${REGISTRY_GC_BIN:-}" ]; then
    bin=$REGISTRY_GC_BIN
    gc_commit="REGISTRY_GC_BIN"
elif [ -n "$rev" ]; then
    gc_commit=$(git -C "$repo" rev-parse --short "$rev^{commit}") || die "--rev $rev: no such commit"
    # One source directory for every commit, its files touched, and a target
    # directory of its own (not the work tree's): cargo's fingerprint of a
    # package does not depend on its path, and its dep-info names the files it
    # was built from, so a second source tree sharing a target directory, or
    # files carrying an older commit's time, would reuse the last binary.
    tree=$target/rev-src
    rm -rf -- "$tree" && mkdir -p "$tree"
    git -C "$repo" archive "$gc_commit" | tar -x -C "$tree"
    find "$tree" -type f -exec touch {} +
    echo "building registry-gc $gc_commit (release) from $tree into $target/rev" >&2
    (cd "$tree" && CARGO_TARGET_DIR=$target/rev cargo build --release --quiet --bin registry-gc) \
        || die "cargo build of $gc_commit failed"
    bin=$target/rev/release/registry-gc
else
    echo "building registry-gc (release, work tree) into $target" >&2
    (cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet --bin registry-gc) \
        || die "cargo build failed (edits in progress?); try --rev HEAD, or set REGISTRY_GC_BIN"
    bin=$target/release/registry-gc
    gc_commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$repo" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        gc_commit="$gc_commit+dirty"
    fi
fi
[ -x "$bin" ] || die "registry-gc binary $bin is not executable"
gc_version=$("$bin" --version 2>/dev/null | awk '{print $2}')
# Builds since 47ca105 keep a manifest cache for object stores (by default in
# ~/.cache/registry-gc): every measured run gets its own empty one instead, so
# that one run can't warm the next.
gc_has_cache=0
"$bin" gc --help 2>/dev/null | grep -q -- '--cache-dir' && gc_has_cache=1
if [ "$cached" = 1 ] && [ "$gc_has_cache" = 0 ]; then
    echo "bench: this registry-gc has no --cache-dir: --cached ignored" >&2
    cached=0
fi
echo "registry-gc $gc_version ($gc_commit): $bin" >&2
echo "reference: docker-registry $ref_version" >&2

if has_backend s3; then
    if ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
        echo "creating $venv (boto3)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q boto3
    fi
fi
helpers() { "${py:-python3}" "$here/helpers.py" "$@"; }
has_backend s3 && py=$venv/bin/python

drop_ok=0
if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then drop_ok=1; fi
if [ "$cold" = 1 ] && [ "$drop_ok" = 0 ]; then
    echo "bench: cannot write /proc/sys/vm/drop_caches here: cold runs skipped" >&2
fi
caches=(warm)
[ "$cold" = 1 ] && [ "$drop_ok" = 1 ] && caches+=(cold)

# ---- dataset ----------------------------------------------------------------
step "dataset $src"
helpers keys --fs "$src" --out "$work/dataset.json" >&2
src_bytes=$(du -sb "$src" | awk '{print $1}')

if has_backend fs; then
    need=$((src_bytes * 2 + src_bytes / 10 + 64 * 1024 * 1024))
    [ "$keep" = 1 ] && need=$((need * ${#mode_list[@]} * ${#caches[@]}))
    avail=$(df --output=avail -B1 "$work" | tail -1)
    [ "$avail" -gt "$need" ] || die "need $need bytes free under $work for the copies, have $avail"
fi

# ---- one measured run ------------------------------------------------------------
# run_one DIR TOOL BACKEND MODE CACHE -- CMD...: runs CMD under /usr/bin/time -v
# (peak RSS), timing it, and writes DIR/run.json.
run_one() {
    local d=$1 tool=$2 backend=$3 mode=$4 cache=$5; shift 6
    local rc=0 t0 t1 wall
    local -a pre=()
    [ "$timeout_s" != 0 ] && pre=(timeout --signal=TERM "$timeout_s")
    t0=$(now)
    /usr/bin/time -v -o "$d/time.txt" "${pre[@]}" "$@" >"$d/stdout" 2>"$d/stderr" &
    tool_pid=$!
    wait "$tool_pid" || rc=$?
    tool_pid=""
    t1=$(now)
    wall=$(elapsed "$t0" "$t1")
    python3 - "$d/run.json" "$tool" "$backend" "$mode" "$cache" "$seq" "$rc" "$wall" "$@" <<'EOF'
import json, sys
out, tool, backend, mode, cache, seq, rc, wall, *cmd = sys.argv[1:]
json.dump({"tool": tool, "backend": backend, "mode": mode, "cache": cache, "seq": int(seq),
           "exit_code": int(rc), "wall_s": float(wall), "command": cmd}, open(out, "w"), indent=1)
EOF
    printf '   %-12s %-3s %-9s %-5s %8s s  exit %s\n' "$tool" "$backend" "$mode" "$cache" "$wall" "$rc" >&2
    if [ "$rc" != 0 ]; then
        echo "   (stderr tail)" >&2
        tail -n 5 "$d/stderr" | sed 's/^/   | /' >&2
    fi
}

new_run_dir() { # TOOL BACKEND MODE CACHE: sets $d (not in a subshell: $seq counts)
    local cache=$4
    [ "$cache" = - ] && cache=""
    seq=$((seq + 1))
    d=$work/runs/$(printf '%02d' "$seq")-$2-$3${cache:+-$cache}-$1
    mkdir -p "$d"
}

gc_flags() { # MODE
    # --force: the reference has no guard, and -m on the generated registries
    # deletes about half the blobs
    local -a f=(gc --min-age 0s --upload-max-age 0s --force)
    [ "$1" = untagged ] && f+=(--delete-untagged)
    [ -n "$concurrency" ] && f+=(--concurrency "$concurrency")
    printf '%s\n' "${f[@]}"
}

# ---- filesystem ---------------------------------------------------------------
fs_gc_run() { # MODE CACHE TOOL: registry-gc (TOOL registry-gc-offline: --offline) on its own copy
    local mode=$1 cache=$2 tool=$3 dir=$work/fs/$1-$2-$3 d
    mkdir -p "$work/fs"
    cp -a "$src" "$dir"
    sync
    new_run_dir "$tool" fs "$mode" "$cache"
    helpers keys --fs "$dir" --out "$d/before.json" >/dev/null
    prepare_cache "$cache" "$dir"
    mapfile -t flags < <(gc_flags "$mode")
    [ "$tool" = registry-gc-offline ] && flags+=(--offline)
    run_one "$d" "$tool" fs "$mode" "$cache" -- "$bin" "${flags[@]}" --report "$d/report.json" "$dir"
    helpers keys --fs "$dir" --out "$d/after.json" >/dev/null
    [ "$keep" = 1 ] || rm -rf -- "$dir"
}

fs_pair() { # MODE CACHE
    local mode=$1 cache=$2 refdir d cfg
    fs_gc_run "$mode" "$cache" registry-gc

    refdir=$work/fs/$mode-$cache-reference
    cp -a "$src" "$refdir"
    sync
    new_run_dir reference fs "$mode" "$cache"
    cfg=$d/config.yml
    ref_config "$cfg" "  filesystem:
    rootdirectory: \"$refdir\""
    helpers keys --fs "$refdir" --out "$d/before.json" >/dev/null
    prepare_cache "$cache" "$refdir"
    mapfile -t flags < <(ref_flags "$mode")
    run_one "$d" reference fs "$mode" "$cache" -- env -u AWS_CA_BUNDLE docker-registry "${flags[@]}" "$cfg"
    helpers keys --fs "$refdir" --out "$d/after.json" >/dev/null
    [ "$keep" = 1 ] || rm -rf -- "$refdir"

    [ "$offline" = 1 ] && fs_gc_run "$mode" "$cache" registry-gc-offline
    return 0
}

if has_backend fs; then
    for mode in "${mode_list[@]}"; do
        for cache in "${caches[@]}"; do
            step "filesystem, $mode, $cache page cache"
            fs_pair "$mode" "$cache"
        done
    done
fi

# ---- S3 -----------------------------------------------------------------------
proxy_port=""
start_proxy() {
    rm -f "$work/proxy.port"
    python3 "$here/proxy.py" --port 0 --port-file "$work/proxy.port" --upstream "$moto" \
        --latency-ms "$latency" --counts-file "$work/proxy-final.json" --log "$work/proxy.log" \
        2>"$work/proxy.stderr" &
    proxy_pid=$!
    for _ in $(seq 1 100); do
        [ -s "$work/proxy.port" ] && break
        kill -0 "$proxy_pid" 2>/dev/null || die "proxy did not start: $(cat "$work/proxy.stderr")"
        sleep 0.05
    done
    [ -s "$work/proxy.port" ] || die "proxy did not write its port"
    proxy_port=$(cat "$work/proxy.port")
    echo "proxy: 127.0.0.1:$proxy_port -> $moto, +$latency ms per request (log $work/proxy.log)" >&2
}
proxy_admin() { # METHOD PATH > body
    curl -fsS --max-time 10 -X "$1" "http://127.0.0.1:$proxy_port$2"
}

# Every run gets a bucket of its own holding only its copy: moto scans the whole
# bucket on every LIST, so a copy waiting for another tool would make the run
# before it slower.
s3_seed() { # ROOT: sets $bucket
    bucket=rgc-bench-$stamp_s-$1
    helpers upload --endpoint "$moto" --bucket "$bucket" --root "$1" --threads "$threads" "$src" >&2
}
s3_unseed() {
    [ "$keep" = 1 ] || helpers rm-bucket --endpoint "$moto" --bucket "$bucket" >/dev/null 2>&1 || true
    [ "$keep" = 1 ] || bucket=""
}

s3_gc_run() { # MODE ROOT TOOL
    local mode=$1 root=$2 tool=$3 d
    local -a cache=()
    s3_seed "$root"
    new_run_dir "$tool" s3 "$mode" -
    if [ "$gc_has_cache" = 1 ]; then
        cache=(--cache-dir "$d/manifest-cache")
        if [ "$tool" = registry-gc-cached ]; then
            # Prime the cache: a dry run on the same keys, straight to moto, unmeasured.
            mapfile -t flags < <(gc_flags "$mode")
            "$bin" "${flags[@]}" --dry-run --quiet "${cache[@]}" --endpoint "$moto" --allow-http --region us-east-1 \
                -o access_key_id=test -o secret_access_key=test "s3://$bucket/$root" >"$d/prime.log" 2>&1 \
                || { echo "bench: priming the manifest cache failed:" >&2; tail -n 5 "$d/prime.log" >&2; }
        fi
    fi
    helpers keys --endpoint "$moto" --bucket "$bucket" --root "$root" --out "$d/before.json" >/dev/null
    proxy_admin POST "/__reset?label=$(basename "$d")" >/dev/null
    mapfile -t flags < <(gc_flags "$mode")
    [ "$tool" = registry-gc-offline ] && flags+=(--offline)
    run_one "$d" "$tool" s3 "$mode" - -- "$bin" "${flags[@]}" --report "$d/report.json" "${cache[@]}" \
        --endpoint "http://127.0.0.1:$proxy_port" --allow-http --region us-east-1 \
        -o access_key_id=test -o secret_access_key=test "s3://$bucket/$root"
    proxy_admin GET /__counts >"$d/counts.json"
    helpers keys --endpoint "$moto" --bucket "$bucket" --root "$root" --out "$d/after.json" >/dev/null
    s3_unseed
}

s3_pair() { # MODE
    local mode=$1 refroot=$1-reference d cfg
    s3_gc_run "$mode" "$mode-registry-gc" registry-gc
    [ "$cached" = 1 ] && s3_gc_run "$mode" "$mode-registry-gc-cached" registry-gc-cached
    [ "$offline" = 1 ] && s3_gc_run "$mode" "$mode-registry-gc-offline" registry-gc-offline

    s3_seed "$refroot"
    new_run_dir reference s3 "$mode" -
    cfg=$d/config.yml
    ref_config "$cfg" "  s3:
    accesskey: test
    secretkey: test
    region: us-east-1
    regionendpoint: http://127.0.0.1:$proxy_port
    bucket: $bucket
    rootdirectory: /$refroot
    secure: false
    v4auth: true"
    helpers keys --endpoint "$moto" --bucket "$bucket" --root "$refroot" --out "$d/before.json" >/dev/null
    proxy_admin POST "/__reset?label=$(basename "$d")" >/dev/null
    mapfile -t flags < <(ref_flags "$mode")
    run_one "$d" reference s3 "$mode" - -- env -u AWS_CA_BUNDLE docker-registry "${flags[@]}" "$cfg"
    proxy_admin GET /__counts >"$d/counts.json"
    helpers keys --endpoint "$moto" --bucket "$bucket" --root "$refroot" --out "$d/after.json" >/dev/null
    s3_unseed
}

if has_backend s3; then
    step "S3: moto on $moto, proxy"
    S3_PORT=$s3_port bash "$repo/backends/s3/start.sh" >&2
    stamp_s=$(date +%s)
    start_proxy
    for mode in "${mode_list[@]}"; do
        step "S3, $mode (upload directly to moto, then run through the proxy)"
        s3_pair "$mode"
    done
    stop_proxy
fi

# ---- results ------------------------------------------------------------------
step "results"
out=$here/results/$stamp.json
md=$here/results/$stamp.md
python3 - "$work/meta.json" <<EOF
import json, os, platform, sys
ds = json.load(open("$work/dataset.json"))
ds.pop("blob_digests", None)
meta = {
    "date": "$stamp", "repo": "$repo", "dataset_dir": "$src", "dataset": ds,
    "latency_ms": float("$latency"), "modes": "${mode_list[*]}".split(), "backends": "${backend_list[*]}".split(),
    "registry_gc_bin": "$bin", "registry_gc_version": "$gc_version", "registry_gc_commit": "$gc_commit",
    "registry_gc_concurrency": "$concurrency" or "default",
    "reference_version": "$ref_version", "registry_gc_manifest_cache": "fresh per run" if $gc_has_cache else "none", "drop_caches_permitted": bool($drop_ok), "kept": bool($keep), "caches": "${caches[*]}".split(),
    "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
             "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$here/helpers.py" collect "$work" --meta "$work/meta.json" --out "$out" --markdown "$md" \
    ${proxy_port:+--proxy-log "$work/proxy.log"}
echo
echo "raw numbers: $out"
echo "markdown:    $md"
step "done"
