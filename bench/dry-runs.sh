#!/usr/bin/env bash
# Side-by-side dry runs on one registry tree on disk: registry-gc and the
# reference collector (`docker-registry garbage-collect --dry-run`), back to
# back, with a warm and optionally a cold page cache. For registries too large
# to copy for every run (run.sh's way): dry runs write nothing, so both tools
# read the same tree. See bench/README.md.
#
#   bash bench/dry-runs.sh [options] DIR        DIR holds docker/registry/v2
#
# Options:
#   --modes LIST      default,untagged (untagged = --delete-untagged) [default]
#   --offline         also time registry-gc --offline (no re-check)
#   --cold            also run each with a cold page cache (drop_caches before
#                     each run; needs root)
#   --rounds N        warm runs of each tool per mode [2]
#   -h, --help
#
# Environment: REGISTRY_GC_BIN (else target/release/registry-gc, built with
# `cargo build --release`).
#
# Prints one Markdown table: wall seconds, user and system CPU seconds, peak
# RSS, and the disk's completed reads during the run (/proc/diskstats: what a
# cold run costs), then each mode's ratios (reference / registry-gc) of the
# fastest runs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

modes=default
offline=0
cold=0
rounds=2

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "dry-runs: $*" >&2; exit 1; }
# shellcheck source=bench/common.sh
. "$here/common.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --modes) modes=$2; shift 2 ;;
        --offline) offline=1; shift ;;
        --cold) cold=1; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "dry-runs: unknown option $1" >&2; usage 2 ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || usage 2
tree=$(cd "$1" 2>/dev/null && pwd) || die "$1: not a directory"
[ -d "$tree/docker/registry/v2" ] || die "$tree has no docker/registry/v2"
case "$rounds" in ''|*[!0-9]*|0) die "--rounds takes a positive number" ;; esac
IFS=, read -r -a mode_list <<<"$modes"
for mode in "${mode_list[@]}"; do
    case "$mode" in default|untagged) ;; *) die "unknown mode $mode (default, untagged)" ;; esac
done

[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed: apt-get install time"
command -v docker-registry >/dev/null || die "docker-registry not found (apt-get install docker-registry)"
if [ -n "${REGISTRY_GC_BIN:-}" ]; then
    bin=$REGISTRY_GC_BIN
else
    (cd "$repo" && cargo build --release --quiet --bin registry-gc) || die "cargo build failed; or set REGISTRY_GC_BIN"
    bin=$repo/target/release/registry-gc
fi
[ -x "$bin" ] || die "registry-gc binary $bin is not executable"
if [ "$cold" = 1 ] && ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    die "--cold needs to write /proc/sys/vm/drop_caches (root)"
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
ref_config "$work/config.yml" "  filesystem:
    rootdirectory: \"$tree\""

disk=$(df --output=source "$tree" | tail -1)
disk=${disk#/dev/}
reads() { awk -v d="$disk" '$3 == d { print $4 }' /proc/diskstats; }

# measure TOOL MODE CACHE CMD...: one row of the table
rows=$work/rows
measure() {
    local tool=$1 mode=$2 cache=$3 before after n
    shift 3
    [ "$cache" = cold ] && prepare_cache cold
    before=$(reads)
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" \
        || die "$tool failed: $* (see its output: $(tail -3 "$work/stderr"))"
    after=$(reads)
    n='–'
    [ -n "$before" ] && [ -n "$after" ] && n=$((after - before))
    read -r wall user sys rss <"$work/time"
    echo "$tool $mode $cache $wall $user $sys $rss $n" >>"$rows"
    echo "  $tool $mode $cache: $wall s" >&2
}

caches=(warm)
[ "$cold" = 1 ] && caches+=(cold)
for mode in "${mode_list[@]}"; do
    gc_flag=()
    [ "$mode" = untagged ] && gc_flag=(--delete-untagged)
    mapfile -t ref_flag < <(ref_flags "$mode")
    for cache in "${caches[@]}"; do
        n=$rounds
        # a cold run before leaves the cache part empty
        [ "$cache" = warm ] && echo "warming the page cache ($tree)" >&2 && warm "$tree"
        [ "$cache" = cold ] && n=1
        for _ in $(seq "$n"); do
            measure registry-gc "$mode" "$cache" "$bin" gc --dry-run --min-age 0s -q "${gc_flag[@]}" "$tree"
            [ "$offline" = 1 ] && measure registry-gc-offline "$mode" "$cache" "$bin" gc --dry-run --min-age 0s -q --offline "${gc_flag[@]}" "$tree"
            measure reference "$mode" "$cache" env -u AWS_CA_BUNDLE docker-registry "${ref_flag[@]}" --dry-run "$work/config.yml"
        done
    done
done

keys=$(find "$tree/docker/registry/v2" -type f | wc -l)
echo
echo "Dry runs on $tree ($keys files), $(nproc) CPUs, registry-gc $("$bin" --version | awk '{print $2}'), $(env -u AWS_CA_BUNDLE docker-registry --version | awk '{print $2, $3}')"
echo
echo "| tool | mode | cache | wall s | user s | sys s | CPU s | peak RSS kB | B/file | disk reads |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
awk -v keys="$keys" '{ printf "| %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %d | %.1f | %s |\n", $1, $2, $3, $4, $5, $6, $5 + $6, $7, $7 * 1024 / keys, $8 }' "$rows"
echo
echo "| mode | cache | vs | fastest wall ref / registry-gc | CPU ref / registry-gc |"
echo "|---|---|---|---:|---:|"
awk '
    { k = $2 " " $3; t = $4; c = $5 + $6
      if (!((k, $1) in best) || t < best[k, $1]) { best[k, $1] = t; cpu[k, $1] = c }
      keys[k] = 1; tools[$1] = 1 }
    END {
        for (k in keys) for (tool in tools) {
            if (tool == "reference" || !((k, tool) in best) || !((k, "reference") in best)) continue
            split(k, m, " ")
            printf "| %s | %s | %s | %.1f× | %.1f× |\n", m[1], m[2], tool, best[k, "reference"] / best[k, tool], cpu[k, "reference"] / cpu[k, tool]
        }
    }' "$rows" | sort
