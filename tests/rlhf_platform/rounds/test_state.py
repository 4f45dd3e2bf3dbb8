"""The round state machine: claims, advances, failures, retries (from the admin too)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from rlhf_platform.campaigns.services import campaign_create
from rlhf_platform.errors import Conflict
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.services import round_retry, round_step
from rlhf_platform.rounds.state import round_advance, round_claim, round_fail

pytestmark = pytest.mark.django_db


@pytest.fixture
def rnd(researcher):
    campaign = campaign_create(owner=researcher, name="sm", policy_config={"backend": "tiny"})
    return Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)


def test_only_one_worker_claims_a_step(rnd):
    assert round_claim(round_id=rnd.pk, state=RoundState.LEARNING, token="w1")
    assert not round_claim(round_id=rnd.pk, state=RoundState.LEARNING, token="w2")


def test_a_stale_claim_is_taken_over(rnd, settings):
    round_claim(round_id=rnd.pk, state=RoundState.LEARNING, token="dead")
    Round.objects.filter(pk=rnd.pk).update(
        claimed_at=timezone.now() - dt.timedelta(seconds=settings.ROUND_CLAIM_STALE_SECONDS + 1)
    )
    assert round_claim(round_id=rnd.pk, state=RoundState.LEARNING, token="alive")
    # the dead worker, if it wakes up, can no longer advance the round
    assert not round_advance(
        round_id=rnd.pk,
        token="dead",
        from_state=RoundState.LEARNING,
        to_state=RoundState.EVALUATING,
    )
    assert round_advance(
        round_id=rnd.pk,
        token="alive",
        from_state=RoundState.LEARNING,
        to_state=RoundState.EVALUATING,
    )
    rnd.refresh_from_db()
    assert rnd.state == RoundState.EVALUATING and rnd.claim_token == ""
    assert rnd.transitions[-1][0] == RoundState.EVALUATING


def test_the_wrong_state_cannot_be_claimed(rnd):
    assert not round_claim(round_id=rnd.pk, state=RoundState.GENERATING, token="w")


def test_a_failing_step_marks_the_round_failed_with_its_reason(rnd):
    # The tiny backend has no initial version registered: loading it fails.
    assert round_step(round_id=rnd.pk) == RoundState.FAILED
    rnd.refresh_from_db()
    assert rnd.state == RoundState.FAILED and rnd.failure_reason.startswith("learning: ")
    assert rnd.claim_token == ""


def test_a_failed_round_is_retried_from_the_step_it_failed_in(rnd):
    round_fail(round_id=rnd.pk, reason="boom")
    retried = round_retry(round_id=rnd.pk)
    assert retried.state == RoundState.LEARNING and retried.failure_reason == ""
    with pytest.raises(Conflict):
        round_retry(round_id=rnd.pk)


def test_the_admin_retries_failed_rounds(rnd, admin_user, client):
    round_fail(round_id=rnd.pk, reason="boom")
    client.force_login(admin_user)
    response = client.post(
        "/admin/rounds/round/",
        {"action": "retry_failed", "_selected_action": [rnd.pk]},
        follow=True,
    )
    assert response.status_code == 200
    rnd.refresh_from_db()
    assert rnd.state == RoundState.LEARNING


def test_only_one_open_round_per_campaign(rnd):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Round.objects.create(campaign=rnd.campaign, index=1)
