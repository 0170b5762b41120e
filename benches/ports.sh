# Sourced by the benchmark scripts: `ports_free PORT...` stops the script when something already
# listens on one of the ports it is about to use. The servers a script starts would fail to bind,
# and redis-benchmark or wrk would then measure whatever answers there instead.
ports_free() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is already in use on 127.0.0.1; stop what listens there and run again" >&2
            exit 1
        fi
    done
}
