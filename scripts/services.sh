#!/usr/bin/env bash
# Makes sure the local services the integration tests use are running,
# starting any that stopped (the same commands the machine uses at boot).
# Addresses can be overridden with the HEYTOM_TEST_* variables the tests read.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  echo "service on port $1 did not come up" >&2
  return 1
}

if ! port_open 5432; then
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_port 5432
fi
if ! port_open 3306; then
  echo "starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306
fi
if ! port_open 5672; then
  # A recovery test may have left the node up with the app stopped.
  if rabbitmqctl status >/dev/null 2>&1; then
    echo "starting the RabbitMQ app" >&2
    rabbitmqctl start_app >/dev/null
  else
    echo "starting RabbitMQ" >&2
    rabbitmq-server -detached
  fi
  wait_port 5672
fi
exit 0
