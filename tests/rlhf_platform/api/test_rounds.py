from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from rlhf_platform.rounds.models import Evaluation, ModelKind, ModelVersion, Round, RoundState
from rlhf_platform.rounds.state import round_fail

pytestmark = pytest.mark.django_db


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def failed_round(campaign):
    rnd = Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)
    round_fail(round_id=rnd.pk, reason="out of memory")
    return rnd


def test_members_see_the_rounds_with_their_evaluations(campaign, annotator):
    done = Round.objects.create(campaign=campaign, index=0, state=RoundState.DONE)
    version = ModelVersion.objects.create(
        campaign=campaign, kind=ModelKind.POLICY, round=done, state="ready"
    )
    Evaluation.objects.create(
        campaign=campaign,
        round=done,
        policy_version=version,
        labels_spent=64,
        win_rate=0.61,
        ci_low=0.55,
        ci_high=0.67,
        n_prompts=32,
        judge="oracle",
    )
    Round.objects.create(campaign=campaign, index=1, state=RoundState.LABELING)
    body = _client(annotator).get(f"/api/v1/campaigns/{campaign.pk}/rounds/").json()
    assert [(r["index"], r["state"]) for r in body] == [(0, "done"), (1, "labeling")]
    assert body[0]["evaluation"]["win_rate"] == 0.61 and body[0]["evaluation"]["labels_spent"] == 64
    assert body[1]["evaluation"] is None


def test_an_outsider_cannot_see_the_rounds(campaign, outsider):
    response = _client(outsider).get(f"/api/v1/campaigns/{campaign.pk}/rounds/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_owner_retries_a_failed_round(failed_round, researcher):
    response = _client(researcher).post(f"/api/v1/rounds/{failed_round.pk}/retry/")
    assert response.status_code == 200
    assert response.json() == {"id": failed_round.pk, "state": "learning"}


def test_an_annotator_cannot_retry_and_nothing_changes(failed_round, annotator):
    response = _client(annotator).post(f"/api/v1/rounds/{failed_round.pk}/retry/")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    failed_round.refresh_from_db()
    assert failed_round.state == RoundState.FAILED


def test_a_round_that_has_not_failed_cannot_be_retried(campaign, researcher):
    rnd = Round.objects.create(campaign=campaign, index=0, state=RoundState.LABELING)
    response = _client(researcher).post(f"/api/v1/rounds/{rnd.pk}/retry/")
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"


def test_unknown_and_foreign_rounds_are_not_found(failed_round, outsider):
    for round_id in (failed_round.pk, 999999):
        response = _client(outsider).post(f"/api/v1/rounds/{round_id}/retry/")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
