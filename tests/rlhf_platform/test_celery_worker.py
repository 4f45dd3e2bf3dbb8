"""A real Celery worker process on the test database: not eager mode.

The worker is a subprocess started with ``DATABASE_URL`` pointing at the database that
pytest-django created, so the test's rows must be committed (``transaction=True``) to be
visible to it. It listens on a queue of its own so that no other worker on the same broker
(another test run, a demo) can take the task.

Two brokers: the real Redis of ``make test``, and the embedded filesystem transport of
``make demo``, where the task is sent from a second process as the web server would send it.
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
TASK = "labeling.release_expired_leases"
# Worker start-up (Django, the ML modules) takes 20 s and more on a loaded 2-core machine.
WAIT_SECONDS = 120
SEND_FROM_ANOTHER_PROCESS = (
    "import sys, django; django.setup(); "
    "from rlhf_platform.celery import app; "
    f"app.send_task({TASK!r}, queue=sys.argv[1])"
)


def _database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test database)."""
    s = connection.settings_dict
    user = quote(s["USER"] or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else ""
    auth = f"{user}{password}@" if user else ""
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}{host}{port}/{s['NAME']}"


def _env(**overrides: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
        "DATABASE_URL": _database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _start_worker(queue: str, env: dict[str, str], log) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "rlhf_platform", "worker"]
    command += ["--pool", "solo", "-Q", queue, "-n", f"{queue}@%h"]
    command += ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # warm shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_until_expired(lease: Lease, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        lease.refresh_from_db()
        if lease.state == LeaseState.EXPIRED:
            return
        time.sleep(0.2)


@pytest.fixture
def expired_lease(campaign, annotator) -> Lease:
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL=postgres://... (make test sets it)")
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    comparison = Comparison.objects.get(pk=lease.comparison_id)
    assert (comparison.leased_count, comparison.state) == (1, ComparisonState.LEASED)
    return lease


def _assert_released(lease: Lease, output: str) -> None:
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED, f"the worker did not run the task:\n{output}"
    assert lease.closed_at is not None
    comparison = Comparison.objects.get(pk=lease.comparison_id)
    assert (comparison.leased_count, comparison.state) == (0, ComparisonState.QUEUED)
    assert TASK in output and "succeeded" in output, output


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_on_redis_releases_expired_lease(expired_lease):
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        pytest.skip("needs CELERY_BROKER_URL=redis://... (make test sets it)")
    queue = f"test-worker-{uuid.uuid4().hex[:12]}"
    env = _env(CELERY_BROKER_URL=settings.CELERY_BROKER_URL)

    with tempfile.TemporaryFile(mode="w+") as log:
        proc = _start_worker(queue, env, log)
        try:
            app.send_task(TASK, queue=queue)
            _wait_until_expired(expired_lease, proc)
        finally:
            _stop_worker(proc)
            with app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
        log.seek(0)
        output = log.read()

    _assert_released(expired_lease, output)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_on_the_demo_filesystem_broker_runs_a_task_sent_by_another_process(
    expired_lease, tmp_path
):
    queue = f"test-worker-{uuid.uuid4().hex[:12]}"
    # No CELERY_BROKER_URL: the default, kombu's filesystem transport under VAR_DIR/broker.
    env = _env(CELERY_BROKER_URL=None, VAR_DIR=str(tmp_path))

    with tempfile.TemporaryFile(mode="w+") as log:
        proc = _start_worker(queue, env, log)
        try:
            sent = subprocess.run(
                [sys.executable, "-c", SEND_FROM_ANOTHER_PROCESS, queue],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert sent.returncode == 0, sent.stderr
            _wait_until_expired(expired_lease, proc)
        finally:
            _stop_worker(proc)
        log.seek(0)
        output = log.read()

    assert "filesystem://" in output, output
    _assert_released(expired_lease, output)
