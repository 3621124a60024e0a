#!/usr/bin/env bash
# Soak test of the outbox (examples/soak.rs) while the brokers misbehave.
#
#   scripts/soak.sh --minutes 10
#
# Starts a private RabbitMQ node (heytom-soak@localhost, AMQP 127.0.0.1:5673,
# distribution 25673, no plugins, data in a temporary directory; the
# machine's RabbitMQ on 5672 is not touched) and a private Kafka-protocol
# broker (tansu, scripts/kafka-broker.sh, port HEYTOM_KAFKA_PORT or 19492),
# builds and runs the soak example (release), and meanwhile, at random
# intervals:
#   - stops the RabbitMQ application for 5-30 s (`rabbitmqctl stop_app`,
#     then `start_app`): connections drop, publishes are refused;
#   - stalls the Kafka broker for 10-40 s (SIGSTOP, then SIGCONT): a real
#     broker stall (requests hang, sessions time out). tansu keeps its data
#     in memory, so a restart would lose acknowledged messages, which no
#     real Kafka does; the stall is the honest outage for it.
# Faults stop when the writing period ends, so the drain runs on healthy
# brokers. Everything started here is stopped on exit (also on Ctrl-C).
#
# Environment: SOAK_* (see examples/soak.rs), HEYTOM_DATABASE_URL,
# HEYTOM_KAFKA_PORT (19492), SOAK_RABBITMQ_PORT (5673), SOAK_RABBITMQ_DIST_PORT
# (25673), SOAK_RABBIT_DOWN (5-30), SOAK_KAFKA_STALL (10-40),
# SOAK_FAULT_GAP (20-60: seconds between faults), SOAK_FAULTS (both|rabbitmq|
# kafka|none), SOAK_PROFILE (release|dev),
# CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."

MINUTES="${SOAK_MINUTES:-10}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) MINUTES="${2:?--minutes needs a value}"; shift 2 ;;
        *) echo "usage: $0 [--minutes N]" >&2; exit 2 ;;
    esac
done
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "soak: --minutes must be a number" >&2; exit 2; }

NODE=heytom-soak@localhost
AMQP_PORT="${SOAK_RABBITMQ_PORT:-5673}"
DIST_PORT="${SOAK_RABBITMQ_DIST_PORT:-25673}"
KAFKA_PORT="${HEYTOM_KAFKA_PORT:-19492}"
range() { local lo="${1%-*}" hi="${1#*-}"; echo $((lo + RANDOM % (hi - lo + 1))); }
RABBIT_DOWN="${SOAK_RABBIT_DOWN:-5-30}"
KAFKA_STALL="${SOAK_KAFKA_STALL:-10-40}"
FAULT_GAP="${SOAK_FAULT_GAP:-20-60}"
FAULTS="${SOAK_FAULTS:-both}"

note() { echo "soak.sh [$(date -u +%H:%M:%S)]: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in "$AMQP_PORT" "$DIST_PORT"; do
    if port_open "$p"; then note "port $p is taken; set SOAK_RABBITMQ_PORT / SOAK_RABBITMQ_DIST_PORT"; exit 1; fi
done

BASE="$(mktemp -d /tmp/heytom-soak-rabbit.XXXXXX)"
KAFKA_PID=""
SOAK_PID=""
RABBIT_STARTED=""

ctl() { rabbitmqctl -q -n "$NODE" "$@"; }

cleanup() {
    local rc=$?
    set +e
    [[ -n "$SOAK_PID" ]] && kill -0 "$SOAK_PID" 2>/dev/null && kill "$SOAK_PID" 2>/dev/null
    [[ -n "$KAFKA_PID" ]] && kill -CONT "$KAFKA_PID" 2>/dev/null
    if [[ -n "$KAFKA_PID" ]]; then
        scripts/kafka-broker.sh stop "$KAFKA_PORT" >/dev/null 2>&1
    fi
    if [[ -n "$RABBIT_STARTED" ]]; then
        ctl stop >/dev/null 2>&1 || kill "$(cat "$BASE/pid" 2>/dev/null)" 2>/dev/null
    fi
    rm -rf "$BASE"
    note "cleaned up (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- private RabbitMQ node -------------------------------------------------
mkdir -p "$BASE/mnesia" "$BASE/log"
echo "[]." >"$BASE/enabled_plugins"
printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$AMQP_PORT" >"$BASE/rabbitmq.conf"
# Its own env file, so that /etc/rabbitmq/rabbitmq-env.conf's NODENAME does not apply.
printf 'ERL_EPMD_ADDRESS=127.0.0.1\n' >"$BASE/rabbitmq-env.conf"
RABBIT_ENV="RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$AMQP_PORT"
RABBIT_ENV+=" RABBITMQ_DIST_PORT=$DIST_PORT RABBITMQ_MNESIA_BASE=$BASE/mnesia RABBITMQ_LOG_BASE=$BASE/log"
RABBIT_ENV+=" RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf"
RABBIT_ENV+=" RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf RABBITMQ_PID_FILE=$BASE/pid"
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
[[ -x "$SERVER" ]] || SERVER="$(command -v rabbitmq-server)"
note "starting RabbitMQ node $NODE on 127.0.0.1:$AMQP_PORT (data in $BASE)"
if [[ "$(id -u)" == 0 ]] && id rabbitmq >/dev/null 2>&1; then
    # The packaged server runs as the rabbitmq user, with its erlang cookie,
    # which rabbitmqctl (also run as rabbitmq by its wrapper) uses too.
    chown -R rabbitmq:rabbitmq "$BASE"
    su rabbitmq -s /bin/sh -c "cd $BASE && HOME=/var/lib/rabbitmq $RABBIT_ENV \
        ERL_FLAGS='-kernel inet_dist_use_interface {127,0,0,1}' $SERVER -detached"
else
    (cd "$BASE" && env $RABBIT_ENV ERL_FLAGS='-kernel inet_dist_use_interface {127,0,0,1}' "$SERVER" -detached)
fi
RABBIT_STARTED=1
for i in $(seq 1 60); do
    ctl ping >/dev/null 2>&1 && break
    (( i == 60 )) && { note "node $NODE did not come up; logs in $BASE/log"; tail -n 20 "$BASE"/log/*.log >&2; exit 1; }
    sleep 1
done
ctl await_startup --timeout 120 >/dev/null
note "RabbitMQ node $NODE up"

# --- private Kafka-protocol broker -----------------------------------------
eval "$(HEYTOM_KAFKA_BOOTSTRAP_SERVERS= HEYTOM_KAFKA_PORT="$KAFKA_PORT" scripts/kafka-broker.sh start)"
KAFKA_PORT="${HEYTOM_KAFKA_BOOTSTRAP_SERVERS##*:}"
KAFKA_PID="$(cat "${TMPDIR:-/tmp}/heytom-tansu-$KAFKA_PORT.pid")"
note "Kafka-protocol broker (tansu pid $KAFKA_PID) on $HEYTOM_KAFKA_BOOTSTRAP_SERVERS"

# --- the soak ----------------------------------------------------------------
# SOAK_PROFILE=dev runs the debug build (quicker to build, for trying the script).
if [[ "${SOAK_PROFILE:-release}" == dev ]]; then PROFILE_DIR=debug; BUILD=(); else PROFILE_DIR=release; BUILD=(--release); fi
cargo build "${BUILD[@]}" --example soak
TARGET="${CARGO_TARGET_DIR:-target}/$PROFILE_DIR"
export SOAK_RABBITMQ_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
export HEYTOM_KAFKA_BOOTSTRAP_SERVERS
"$TARGET/examples/soak" --minutes "$MINUTES" &
SOAK_PID=$!

# Faults until the writing period ends (the example's clock starts a few
# seconds after this one, so the last fault ends before its drain).
END=$(( $(date +%s) + $(awk "BEGIN { printf \"%d\", $MINUTES * 60 }") ))
RESTARTS=0
STALLS=0
sleep_while_running() {
    local until=$(( $(date +%s) + $1 ))
    while (( $(date +%s) < until )) && kill -0 "$SOAK_PID" 2>/dev/null; do sleep 1; done
}
sleep_while_running "$(range "$FAULT_GAP")"
while (( $(date +%s) < END )) && kill -0 "$SOAK_PID" 2>/dev/null; do
    left=$(( END - $(date +%s) ))
    case "$FAULTS" in
        rabbitmq) kind=0 ;;
        kafka) kind=1 ;;
        none) kind=2 ;;
        *) kind=$((RANDOM % 2)) ;;
    esac
    if (( kind == 2 )); then
        sleep_while_running 5
        continue
    elif (( kind == 0 )); then
        down=$(range "$RABBIT_DOWN"); (( down > left )) && down=$left
        note "RabbitMQ stop_app for ${down}s"
        ctl stop_app >/dev/null || note "stop_app failed"
        sleep_while_running "$down"
        for _ in 1 2 3 4 5; do ctl start_app >/dev/null && break; note "start_app failed; again"; sleep 2; done
        RESTARTS=$((RESTARTS + 1))
        note "RabbitMQ start_app (restart #$RESTARTS)"
    else
        stall=$(range "$KAFKA_STALL"); (( stall > left )) && stall=$left
        note "Kafka broker SIGSTOP for ${stall}s"
        kill -STOP "$KAFKA_PID"
        sleep_while_running "$stall"
        kill -CONT "$KAFKA_PID"
        STALLS=$((STALLS + 1))
        note "Kafka broker SIGCONT (stall #$STALLS)"
    fi
    sleep_while_running "$(range "$FAULT_GAP")"
done
note "faults done: $RESTARTS RabbitMQ restarts, $STALLS Kafka stalls; waiting for the drain"
set +e
wait "$SOAK_PID"
rc=$?
SOAK_PID=""
set -e
echo "SOAK FAULTS: rabbitmq_restarts=$RESTARTS kafka_stalls=$STALLS minutes=$MINUTES"
exit "$rc"
