"""A real Celery worker process, on the real broker and the test database: not eager mode.

The worker is a subprocess started with ``DATABASE_URL`` pointing at the database that
pytest-django created, so the test's rows must be committed (``transaction=True``) to be
visible to it. It listens on a queue of its own so that no other worker on the same broker
(another test run, a demo) can take the task.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from rlhf_platform.celery import app
from rlhf_platform.labeling.models import Comparison, ComparisonState, Lease, LeaseState
from rlhf_platform.labeling.services import comparison_next

ROOT = Path(__file__).resolve().parents[2]
# Worker start-up (Django, the ML modules) takes 20 s and more on a loaded 2-core machine.
WAIT_SECONDS = 120


def _database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test database)."""
    s = connection.settings_dict
    user = quote(s["USER"] or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else ""
    auth = f"{user}{password}@" if user else ""
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}{host}{port}/{s['NAME']}"


def _start_worker(queue: str, log) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rlhf_platform",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # warm shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _delete_queue(queue: str) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_process_releases_expired_lease(campaign, annotator):
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL=postgres://... (make test sets it)")
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "amqp://", "pyamqp://")):
        pytest.skip("needs CELERY_BROKER_URL=redis://... (make test sets it)")

    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    comparison = Comparison.objects.get(pk=lease.comparison_id)
    assert (comparison.leased_count, comparison.state) == (1, ComparisonState.LEASED)

    queue = f"test-worker-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = _start_worker(queue, log)
        try:
            app.send_task("labeling.release_expired_leases", queue=queue)
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline and proc.poll() is None:
                lease.refresh_from_db()
                if lease.state == LeaseState.EXPIRED:
                    break
                time.sleep(0.2)
        finally:
            _stop_worker(proc)
            _delete_queue(queue)
        log.seek(0)
        output = log.read()

    assert lease.state == LeaseState.EXPIRED, f"the worker did not run the task:\n{output}"
    assert lease.closed_at is not None
    comparison.refresh_from_db()
    assert (comparison.leased_count, comparison.state) == (0, ComparisonState.QUEUED)
    assert "labeling.release_expired_leases" in output and "succeeded" in output, output
