# Sourced by scripts/cluster-demo and bench/compare: a throwaway redis-server
# on a free 127.0.0.1 port, without persistence (never the Redis on 6379).
#
#   start_throwaway_redis LOGFILE   sets REDIS_PID and REDIS_PORT, or returns 1
#   redis_answers PORT              PING answered with PONG?

# Answers PING? (bash's /dev/tcp, so no redis-cli is needed.)
redis_answers() {
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'PING\r\n' >&3
    read -r -t 1 reply <&3 || true
    exec 3<&- 3>&-
    [[ "$reply" == +PONG* ]]
}

# A free port: nothing accepts connections on it. Another process could take it
# before Redis does, so a Redis that does not come up is retried.
start_throwaway_redis() {
    local log=$1 port
    REDIS_PID=
    REDIS_PORT=
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            >"$log" 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 100); do
            if redis_answers "$port" 2>/dev/null; then
                REDIS_PORT=$port
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    done
    return 1
}
