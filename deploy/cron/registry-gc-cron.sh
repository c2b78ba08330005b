#!/bin/sh
# Runs one collection for cron and reports its outcome by exit code
# (see `registry-gc gc --help`). Install as /usr/local/lib/registry-gc/registry-gc-cron.sh.
set -u

# The registry's own config: registry-gc reads its `storage:` section (and the
# REGISTRY_STORAGE_* variables, if cron's environment sets them), so both always
# agree on where the data is.
registry-gc -q gc \
    --registry-config /etc/docker/registry/config.yml \
    --report /var/log/registry-gc/last.json \
    --metrics /var/lib/node_exporter/textfile_collector/registry_gc.prom
code=$?

case $code in
    0) ;;
    4) logger -t registry-gc -p user.warning "some deletions failed; the next run finishes them (see /var/log/registry-gc/last.json)" ;;
    3) logger -t registry-gc -p user.err "refused for safety: check --registry-config and the storage root" ;;
    2) logger -t registry-gc -p user.err "bad command line or settings: nothing was done" ;;
    *) logger -t registry-gc -p user.err "failed with exit code $code: nothing was deleted" ;;
esac
# cron mails the output of a failing job; exit 4 is not worth a mail
[ "$code" -eq 0 ] || [ "$code" -eq 4 ]
