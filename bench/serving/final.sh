#!/usr/bin/env bash
# The measured run of bench/serving/README.md: the background pool builder (bench/build_pool.py,
# if running) is paused for the run and always resumed, also on failure.
set -u
cd "$(dirname "$0")/../.."
trap 'pkill -CONT -f build_pool.py || true' EXIT
pkill -STOP -f build_pool.py || true
date -u
uptime
.venv/bin/python -m bench.serving --no-progress "$@"
rc=$?
.venv/bin/python -m bench.serving --no-progress --n 32 --think 2 --duration 20 \
  --out var/serving/think.json
uptime
exit $rc
