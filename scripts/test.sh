#!/usr/bin/env bash
# Runs everything CI runs: format check, clippy with -D warnings, and every
# test (unit, trybuild, in-memory, and integration tests against the real
# RabbitMQ, PostgreSQL, MariaDB and a Kafka-protocol broker this script starts).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outside the clone so a fresh checkout reuses the compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heytom-mq/target}"
# The rust-version in Cargo.toml, checked with exactly that toolchain below.
MSRV="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)"
# Integration tests fail (never skip) when a service is missing.
export HEYTOM_TEST_REQUIRE_SERVICES=1

scripts/services.sh

# The dashboard's browser test drives headless Chromium through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (the dashboard's browser test)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y chromium chromium-driver >/dev/null || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y chromium chromium-driver >/dev/null
  }
fi

if [ -z "${HEYTOM_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  eval "$(scripts/kafka-broker.sh start)"
  trap 'scripts/kafka-broker.sh stop' EXIT
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== each transport and database feature alone compiles, without warnings"
# Not RUSTFLAGS=-D warnings: that would rebuild every dependency.
for feature in rabbitmq kafka postgres mysql sqlite; do
  out="$(cargo check --quiet -p heytom-mq --no-default-features --features "$feature" 2>&1)" || { echo "$out"; exit 1; }
  if grep -q '^warning' <<<"$out"; then
    echo "$out"; echo "warnings with --features $feature alone"; exit 1
  fi
done
echo "== cargo test"
cargo test --workspace --all-features "$@"
echo "== quickstart (the README's first command)"
cargo run --quiet --example quickstart
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet
echo "== cargo package (the two published crates, verified)"
cargo package --quiet --allow-dirty -p heytom-mq-derive -p heytom-mq
echo "== minimum supported Rust ($MSRV): cargo check"
# rustup fetches the toolchain once; later runs find it installed.
if ! rustup run "$MSRV" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$MSRV" --profile minimal
fi
CARGO_TARGET_DIR="$CARGO_TARGET_DIR-msrv" cargo "+$MSRV" check --workspace --all-targets --all-features --quiet
echo "== all checks passed"
