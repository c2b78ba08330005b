# Sourced by the start scripts: waits for an emulator started in the background.
#   wait_until_answers NAME SECONDS BANNER
# Needs an `answers` function (the emulator's health check), and the emulator's
# pid in "$dir/NAME.pid" and its log in "$dir/NAME.log". Prints BANNER and
# returns once it answers; exits 1 with the log's tail if it dies or times out.
wait_until_answers() {
    local name=$1 seconds=$2 banner=$3
    for _ in $(seq 1 "$seconds"); do
        if answers; then
            echo "$banner"
            return 0
        fi
        if ! kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then break; fi
        sleep 1
    done
    echo "$name: did not come up on $endpoint; last log lines:" >&2
    tail -n 20 "$dir/$name.log" >&2
    exit 1
}
