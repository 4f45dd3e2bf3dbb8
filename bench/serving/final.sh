#!/usr/bin/env bash
# The measured run of bench/serving/README.md: N = 1, 8, 32, 64 flat out and N = 32 with 2 s
# of think time, ours against Label Studio (uWSGI, its image's layout) and Label Studio under
# gunicorn (our layout), in one invocation (about 8 minutes), fresh databases.
set -u
cd "$(dirname "$0")/../.."
date -u
uptime
.venv/bin/python -m bench.serving --fresh --duration 15 --profile "$@"
rc=$?
uptime
exit $rc
