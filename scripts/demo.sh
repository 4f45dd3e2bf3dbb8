#!/usr/bin/env bash
# `make demo`: the embedded quickstart. Migrates the database (SQLite under var/ unless
# DATABASE_URL says otherwise), seeds the demo users and campaign, then runs the web server
# and a Celery worker with embedded beat on the filesystem broker as one honcho group.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
export VENV_BIN="$PWD/$VENV/bin"
[ -x "$VENV_BIN/python" ] || { echo "error: no virtualenv at $VENV; run 'make demo'"; exit 1; }

export DEMO_HOST=${DEMO_HOST:-127.0.0.1}
export DEMO_PORT=${DEMO_PORT:-8000}
export VAR_DIR=${VAR_DIR:-$PWD/var}
# runserver serves static files itself only with DEBUG on; the demo binds to localhost.
export DEBUG=${DEBUG:-1}
export PYTHONUNBUFFERED=1

if "$VENV_BIN/python" - "$DEMO_HOST" "$DEMO_PORT" <<'PY'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
then
  echo "error: $DEMO_HOST:$DEMO_PORT is in use; stop what runs there or set DEMO_PORT=8001"
  exit 1
fi

echo "== Database: ${DATABASE_URL:-SQLite at $VAR_DIR/db.sqlite3}"
echo "== Broker:   ${CELERY_BROKER_URL:-filesystem transport under $VAR_DIR/broker}"
"$VENV_BIN/python" manage.py migrate --noinput
if [ "$DEBUG" != "1" ]; then
  # Without DEBUG the admin's CSS and JS must be collected (and served by a web server).
  "$VENV_BIN/python" manage.py collectstatic --noinput -v0
fi
"$VENV_BIN/python" manage.py seed_demo
# No worker runs yet: a round that the last `make demo` left mid-step (Ctrl-C) is taken
# back and sent again now, instead of after the 10-minute stale-claim timeout.
"$VENV_BIN/python" manage.py resume_rounds

base="http://$DEMO_HOST:$DEMO_PORT"
cat <<MSG

== Starting the web server and the Celery worker (with beat). Ctrl-C stops both.
   Label:        $base/            (log in as annotator)
   Research:     $base/research/   (log in as researcher: win rate, rounds, agreement)
   Budgets:      $base/budgets/    (researcher or admin)
   Admin:        $base/admin/      (log in as admin)
   API docs:     $base/api/docs/
   API:          $base/api/v1/     (token: POST $base/api/v1/auth/token/)

MSG
exec "$VENV_BIN/honcho" -f Procfile.demo start
