#!/usr/bin/env bash
# Stops the emulators that the start scripts launched, by the pid files they
# left in the emulator dir. Only those pids are signalled, and only while they
# still run one of our emulators (a stale pid may belong to someone else now).
set -euo pipefail
dir="${REGISTRY_GC_EMULATOR_DIR:-/tmp/registry-gc-emulators}"
for name in moto azurite gcs localstack; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -qE 'moto_server|azurite-blob|fake-gcs-server|localstack\.runtime\.main'; then
        kill "$pid"
        echo "$name: stopped (pid $pid)"
    fi
    rm -f "$pidfile"
done
