"""Rounds through a real Celery worker process, real Redis and real PostgreSQL.

- every algorithm's judge campaign runs 3 rounds to done;
- the worker is SIGKILLed in the middle of a learning step and restarted: the campaign
  still finishes with no duplicated label, no orphan or duplicate version, no stuck round;
- with the broker stopped, annotators still fetch and submit queued comparisons; when it
  returns, the round proceeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from bench.soak.services import PrivateRedis, free_port
from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.campaigns.services import campaign_add_member, campaign_set_state
from rlhf_platform.celery import app
from rlhf_platform.labeling.models import Label
from rlhf_platform.rounds.models import Evaluation, ModelVersion, Round, RoundState
from tests.rlhf_platform.rounds.conftest import live_campaign
from tests.rlhf_platform.test_celery_worker import _database_url

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _real_services():
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip(
            "needs PostgreSQL and Redis (make test sets DATABASE_URL and CELERY_BROKER_URL)"
        )
    app.control.purge()  # messages left by earlier tests name rows that are gone


class Worker:
    def __init__(self, tmp_path: Path, broker_url: str | None = None):
        self.tmp_path = tmp_path
        self.broker_url = broker_url or settings.CELERY_BROKER_URL
        self.proc: subprocess.Popen | None = None
        self.log = open(tmp_path / "worker.log", "ab")

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_VISIBILITY_TIMEOUT": "20",
            "ROUND_SWEEP_SECONDS": "2",
            "ROUND_CLAIM_STALE_SECONDS": "8",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rlhf_platform",
            "worker",
            "-B",
            "--schedule",
            str(self.tmp_path / "beat-schedule"),
            "--pool",
            "solo",
            "-Q",
            "gpu,judge,default",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        self.log.flush()
        return (self.tmp_path / "worker.log").read_text(errors="replace")[-6000:]


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path)
    yield w
    w.stop()


def _wait(predicate, worker: Worker, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert worker.proc.poll() is None, f"worker died:\n{worker.output()}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{worker.output()}")


def _assert_consistent(campaign: Campaign) -> None:
    rounds = list(campaign.rounds.order_by("index"))
    assert all(r.state == RoundState.DONE for r in rounds), [
        (r.index, r.state, r.failure_reason) for r in rounds
    ]
    for label in Label.objects.filter(campaign=campaign).select_related("comparison"):
        assert label.comparison.round.campaign_id == campaign.pk
    labels = Label.objects.filter(campaign=campaign)
    assert labels.count() == len(set(labels.values_list("comparison_id", "judge_name")))
    assert campaign.budget.labels_spent == labels.count()
    versions = ModelVersion.objects.filter(campaign=campaign)
    assert all(v.state == "ready" for v in versions)
    root = Path(settings.ARTIFACT_ROOT)
    for kind in ("policy", "reward"):
        on_disk = {
            str(p.relative_to(root))
            for p in (root / "campaigns" / str(campaign.pk) / kind).iterdir()
        }
        registered = set(versions.filter(kind=kind).values_list("artifact_path", flat=True))
        assert on_disk == registered, f"orphan or missing {kind} folders: {on_disk ^ registered}"
    assert Evaluation.objects.filter(campaign=campaign).count() == len(rounds)


def test_every_algorithm_runs_three_rounds_on_a_worker(researcher, worker):
    campaigns = [
        live_campaign(researcher, name=a, algorithm=a)
        for a in ("offline", "periodic", "online", "infomax")
    ]
    campaigns.append(
        live_campaign(
            researcher, name="dts", algorithm="online", acquisition_rule="double_thompson"
        )
    )
    worker.start()
    for c in campaigns:
        campaign_set_state(campaign=c, action="start")
    _wait(
        lambda: all(
            Campaign.objects.get(pk=c.pk).state == CampaignState.FINISHED for c in campaigns
        ),
        worker,
        600,
        "all campaigns to finish",
    )
    for c in campaigns:
        c.refresh_from_db()
        assert c.rounds.count() == 3
        _assert_consistent(c)


def test_a_worker_killed_mid_learning_step_recovers(researcher, worker):
    campaign = live_campaign(researcher, name="crash", algorithm="infomax", rounds=3)
    worker.start()
    campaign_set_state(campaign=campaign, action="start")
    learning = Round.objects.filter(campaign=campaign, index=1, state=RoundState.LEARNING).exclude(
        claim_token=""
    )
    _wait(learning.exists, worker, 300, "round 1 to be in its learning step")
    worker.kill()
    killed_in = Round.objects.get(campaign=campaign, index=1)
    assert killed_in.state == RoundState.LEARNING and killed_in.claim_token  # really mid-step
    worker.start()
    _wait(
        lambda: Campaign.objects.get(pk=campaign.pk).state == CampaignState.FINISHED,
        worker,
        400,
        "the campaign to finish after the restart",
    )
    campaign.refresh_from_db()
    _assert_consistent(campaign)
    assert ModelVersion.objects.filter(campaign=campaign, round__isnull=False).count() == 6


@pytest.fixture
def private_broker(tmp_path):
    """This process's Celery app and a worker on a private Redis (the soak's: a free port, its
    files in a temp dir), never the machine's shared one; restored afterwards."""
    redis = PrivateRedis(tmp_path / "redis", free_port())
    redis.start()
    saved = app.conf.broker_url
    app.conf.broker_url = redis.url()
    app._after_fork()  # drop the connection and producer pools of the shared broker
    try:
        yield redis
    finally:
        app.conf.broker_url = saved
        app._after_fork()
        redis.stop()


def test_annotators_keep_labeling_while_the_broker_is_down(
    researcher, annotator, private_broker, tmp_path
):
    worker = Worker(tmp_path, broker_url=private_broker.url())
    try:
        _label_through_an_outage(researcher, annotator, worker, private_broker)
    finally:
        worker.stop()


def _label_through_an_outage(researcher, annotator, worker, redis: PrivateRedis) -> None:
    campaign = live_campaign(
        researcher, name="outage", algorithm="online", feedback_mode="human", rounds=2
    )
    campaign_add_member(campaign=campaign, user=annotator)
    worker.start()
    campaign_set_state(campaign=campaign, action="start")
    first = Round.objects.filter(campaign=campaign, index=0, state=RoundState.LABELING)
    _wait(first.exists, worker, 300, "round 0 to wait for labels")
    worker.stop()
    client = APIClient()
    client.force_authenticate(annotator)
    redis.stop()
    try:
        for i in range(campaign.prompts_per_round):
            served = client.post(f"/api/v1/campaigns/{campaign.pk}/next/", format="json")
            assert served.status_code == 200, served.content
            lease_id = served.json()["lease_id"]
            stored = client.post(
                f"/api/v1/leases/{lease_id}/label/",
                {"choice": "A", "idempotency_key": f"outage-{i}"},
                format="json",
            )
            assert stored.status_code == 201, stored.content
    finally:
        redis.start()
    assert Label.objects.filter(campaign=campaign).count() == campaign.prompts_per_round
    worker.start()  # its beat's sweep finds the complete round and moves it on
    _wait(
        lambda: Round.objects.filter(campaign=campaign, index=0, state=RoundState.DONE).exists(),
        worker,
        300,
        "round 0 to proceed after the broker returned",
    )
    _wait(
        lambda: Round.objects.filter(campaign=campaign, index=1).exists(),
        worker,
        120,
        "round 1 to open",
    )
