#!/usr/bin/env bash
# Runs every benchmark of the main workspace (release), heytom-mq and the raw
# client side by side in each process, and collects the machine-readable
# lines at the end:
#
#   scripts/bench.sh                 # all: memory, rabbitmq, kafka, outbox
#   scripts/bench.sh memory kafka    # some of them
#
# Each benchmark prints every round, CPU time and allocations per message for
# both sides, and ends with `RESULT <benchmark>.<figure> ratio=<median of the
# per-round ratios> rounds=<n>` lines (outbox targets in rows/s or ms also as
# `FIGURE` lines). The full output goes to $BENCH_LOG (default
# target-dir/bench-<date>.log); the RESULT / FIGURE lines are printed again at
# the end. The peer comparison (ruststream) is a separate workspace:
# benchmarks/peers/README.md.
#
# Needs the services of scripts/services.sh; starts its own Kafka-protocol
# broker (scripts/kafka-broker.sh) unless HEYTOM_KAFKA_BOOTSTRAP_SERVERS is set.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heytom-mq/target}"
mkdir -p "$CARGO_TARGET_DIR"
LOG="${BENCH_LOG:-$CARGO_TARGET_DIR/bench-$(date -u +%Y%m%dT%H%M%SZ).log}"

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(memory rabbitmq kafka outbox)

scripts/services.sh
if [ -z "${HEYTOM_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  eval "$(scripts/kafka-broker.sh start)"
  trap 'scripts/kafka-broker.sh stop' EXIT
fi

examples=()
for b in "${benches[@]}"; do examples+=(--example "bench_$b"); done
cargo build --release --quiet -p heytom-mq "${examples[@]}"

{
  echo "# scripts/bench.sh ${benches[*]} on $(date -u +%FT%TZ), $(nproc) cores, git $(git rev-parse --short HEAD)"
  for b in "${benches[@]}"; do
    echo "== bench_$b"
    "$CARGO_TARGET_DIR/release/examples/bench_$b"
  done
} 2>&1 | tee "$LOG"

echo
echo "== summary (full output: $LOG)"
grep -E '^(RESULT|FIGURE) ' "$LOG" || true
