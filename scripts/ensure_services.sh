#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start them with the documented
# commands when they are installed but down; fail with a clear message when absent.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is down; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  pg_up || { echo "error: PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started (install postgresql, trust auth for 127.0.0.1)"; exit 1; }
fi

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "Redis is down; starting it"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  fi
  redis_up || { echo "error: Redis is not reachable on 127.0.0.1:6379 and could not be started (install redis-server)"; exit 1; }
fi
echo "PostgreSQL and Redis are up"
