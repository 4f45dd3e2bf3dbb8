"""CPU per label of next + submit, in one process, with an optional profile (issue 21).

    .venv/bin/python -m bench.serving.inproc                  # 1,500 labels, figures only
    .venv/bin/python -m bench.serving.inproc --profile        # plus a cProfile breakdown

Calls the production WSGI application (``rlhf_platform.wsgi.application``, DEBUG off, the
whole middleware stack, token authentication) directly with hand-built requests, one
annotator after another: no HTTP server, no client, no other process competing in the loop.
So it measures exactly the code of the two endpoints: the web process's CPU per label from
``time.process_time`` and the CPU of its own PostgreSQL backend from ``/proc/<pid>/stat``
(the backend's pid from ``pg_backend_pid()``; PostgreSQL on this machine), plus the SQL
statements per call. With ``--profile``, cProfile's own time is summed by where the code
lives (psycopg, Django's ORM, DRF, middleware, JSON, ours...), which is what
``bench/serving/README.md`` reports as the profile before and after the cuts; cProfile slows
Python code about 1.5-2x, so the split is a guide and the unprofiled CPU is the figure.

Uses ``DATABASE_URL`` (default: the serving benchmark's ``rlhf_serving``; migrated first).
Writes ``var/serving/inproc.json``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import secrets
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Where a function's own time is counted, by the first matching fragment of its file path.
CATEGORIES = [
    ("psycopg (driver, wire protocol)", ("/psycopg/", "/psycopg_binary/", "psycopg_c")),
    ("Django ORM: SQL compiler and query building", ("/django/db/models/sql/",)),
    ("Django ORM: models, querysets, expressions", ("/django/db/models/",)),
    ("Django DB backend and transactions", ("/django/db/",)),
    ("DRF: serializers and fields", ("/rest_framework/serializers", "/rest_framework/fields")),
    ("DRF: authentication", ("/rest_framework/authentication", "/rest_framework/authtoken")),
    ("DRF: request, view, parsers, renderers", ("/rest_framework/",)),
    ("Django middleware", ("/django/middleware/", "/django/contrib/", "/django_htmx/")),
    ("Django URL resolving", ("/django/urls/",)),
    ("Django request/response handling", ("/django/core/handlers/", "/django/http/")),
    ("Django other", ("/django/",)),
    ("JSON encode/decode", ("/json/", "orjson")),
    ("gunicorn: HTTP parsing, worker loop", ("/gunicorn/",)),
    ("our code (services, selectors, views)", ("/rlhf_platform/", "/annotator_ui/")),
    ("Python stdlib: datetime, uuid, random, ...", ("/lib/python3",)),
]


def category(filename: str) -> str:
    for name, fragments in CATEGORIES:
        if any(f in filename for f in fragments):
            return name
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C functions called from the above)"
    return "other"


def backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Caller:
    """Calls the WSGI application with one annotator's token, as gunicorn would."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        raw = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8111",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8111",
            "HTTP_AUTHORIZATION": f"Token {self.token}",
            "HTTP_ACCEPT": "application/json",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.input": io.BytesIO(raw),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        chunks = self.app(environ, lambda s, h, exc_info=None: status.append(s))
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return int(status[0].split()[0]), json.loads(data) if data else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--labels", type=int, default=1500, help="labels in the measured loop")
    ap.add_argument("--warmup", type=int, default=200, help="labels before measuring")
    ap.add_argument("--annotators", type=int, default=32)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="run the loop under cProfile")
    ap.add_argument("--top", type=int, default=25, help="functions listed with --profile")
    ap.add_argument("--out", type=Path, default=ROOT / "var/serving/inproc.json")
    args = ap.parse_args(argv)

    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rlhf_serving")
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    from bench.serving.ours_setup import setup
    from rlhf_platform.wsgi import application

    total = args.warmup + args.labels
    comparisons = total // args.overlap + args.annotators + 10
    tag = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    campaign_id, tokens = setup(
        annotators=args.annotators,
        comparisons=comparisons,
        overlap=args.overlap,
        name=f"bench-inproc {tag}",
    )
    callers = [Caller(application, t) for t in tokens]
    connection.close()  # the loop opens its own, as a gunicorn worker does
    # One backend for the whole loop, so its CPU can be read from /proc (the production
    # setting, 60 s, would reconnect during a long profiled loop).
    connection.settings_dict["CONN_MAX_AGE"] = None
    if os.environ.get("BENCH_DB_OPTIONS"):
        connection.settings_dict.setdefault("OPTIONS", {}).update(
            json.loads(os.environ["BENCH_DB_OPTIONS"])
        )

    counts: dict[str, collections.Counter] = {"next": collections.Counter(), "submit": {}}
    counts["submit"] = collections.Counter()
    current = ["next"]

    def count(execute, sql, params, many, context):
        counts[current[0]][sql.split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)

    def one_label(i: int) -> None:
        caller = callers[i % len(callers)]
        current[0] = "next"
        status, body = caller.post(f"/api/v1/campaigns/{campaign_id}/next/")
        if status != 200 or body.get("status") != "leased":
            raise RuntimeError(f"next answered {status}: {body}")
        current[0] = "submit"
        status, body = caller.post(
            f"/api/v1/leases/{body['lease_id']}/label/",
            {"choice": "A", "idempotency_key": uuid.uuid4().hex, "time_taken_ms": 1000},
        )
        if status != 201:
            raise RuntimeError(f"submit answered {status}: {body}")

    load_at_start = os.getloadavg()[0]
    print(f"warm-up: {args.warmup} labels", file=sys.stderr, flush=True)
    for i in range(args.warmup):
        one_label(i)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
    for c in counts.values():
        c.clear()
    # CPU time, not wall: waiting on PostgreSQL is not the web process's cost.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    with connection.execute_wrapper(count):
        cpu0, wall0, pg0 = time.process_time(), time.perf_counter(), backend_cpu_s(backend)
        if profiler:
            profiler.enable()
        for i in range(args.warmup, total):
            one_label(i)
            if (i - args.warmup + 1) % 250 == 0:
                print(f"  {i - args.warmup + 1}/{args.labels} labels", file=sys.stderr, flush=True)
        if profiler:
            profiler.disable()
        cpu1, wall1, pg1 = time.process_time(), time.perf_counter(), backend_cpu_s(backend)
    with connection.cursor() as cur:  # the same backend served the whole loop
        cur.execute("SELECT pg_backend_pid()")
        same_backend = cur.fetchone()[0] == backend

    n = args.labels
    out: dict = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.serving.inproc " + " ".join(argv or sys.argv[1:]),
        "loadavg_1m_at_start": round(load_at_start, 2),
        "labels": n,
        "profiled": bool(profiler),
        "web_cpu_ms_per_label": round(1000 * (cpu1 - cpu0) / n, 2),
        "pg_backend_cpu_ms_per_label": round(1000 * (pg1 - pg0) / n, 2),
        "pg_same_backend_throughout": same_backend,
        "wall_ms_per_label": round(1000 * (wall1 - wall0) / n, 2),
        "sql_per_next": {k: round(v / n, 2) for k, v in sorted(counts["next"].items())},
        "sql_per_submit": {k: round(v / n, 2) for k, v in sorted(counts["submit"].items())},
    }
    out["sql_per_next"]["total"] = round(sum(counts["next"].values()) / n, 2)
    out["sql_per_submit"]["total"] = round(sum(counts["submit"].values()) / n, 2)
    if profiler:
        stats = pstats.Stats(profiler)
        by_cat: collections.Counter = collections.Counter()
        rows = []
        for (filename, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
            by_cat[category(filename)] += tt
            rows.append((ct, tt, f"{filename.split('site-packages/')[-1]}:{line}({func})"))
        profiled_total = sum(by_cat.values())
        out["profile_self_time_share"] = {
            k: round(v / profiled_total, 3) for k, v in by_cat.most_common()
        }
        out["profile_top_cumulative"] = [
            {
                "cum_ms_per_label": round(1000 * ct / n, 2),
                "self_ms_per_label": round(1000 * tt / n, 2),
                "function": f,
            }
            for ct, tt, f in sorted(rows, reverse=True)[: args.top]
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
