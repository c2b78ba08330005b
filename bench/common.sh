# Shared by bench/run.sh, bench/dry-runs.sh and bench/validate_generator.sh
# (sourced): how the reference registry and collector are configured and
# called, and how the page cache is prepared.

ref_flags() { # MODE
    printf '%s\n' garbage-collect
    [ "$1" = untagged ] && printf '%s\n' --delete-untagged
    return 0
}

# FILE DRIVER-SECTION (indented under storage:) [ADDR SECRET]: a registry
# that serves listens on ADDR; the collector's config needs none.
ref_config() {
    cat >"$1" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
$2
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "${3:-127.0.0.1:0}"
EOF
    if [ -n "${4:-}" ]; then printf '  secret: "%s"\n' "$4" >>"$1"; fi
}

warm() { # DIR: read the tree's metadata and small files into the page cache
    find "$1" >/dev/null
    find "$1" -type f -size -65k -print0 | xargs -0 -r cat >/dev/null
}

prepare_cache() { # CACHE DIR: drop the page cache, or warm it with DIR
    if [ "$1" = cold ]; then sync; echo 3 >/proc/sys/vm/drop_caches; else warm "$2"; fi
}
