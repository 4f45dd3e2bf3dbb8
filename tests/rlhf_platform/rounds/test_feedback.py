"""Feedback modes: human rounds wait for annotators (or their deadline), mixed rounds send a
share of the comparisons to both the judge and humans, invalid judge answers never count."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from ml_worker.core.judges.base import JudgeResult
from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.services import campaign_add_member, campaign_set_state
from rlhf_platform.labeling.models import Comparison, ComparisonState, JudgeCall, Label
from rlhf_platform.labeling.services import NothingToLabel, comparison_next, label_submit
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.services import (
    campaign_open_round,
    round_judge,
    round_step,
    round_try_close,
)
from tests.rlhf_platform.rounds.conftest import live_campaign

pytestmark = pytest.mark.django_db


def _to_labeling(campaign) -> Round:
    with dispatch.inline():
        rnd = campaign_open_round(campaign_id=campaign.pk)
        while rnd.state != RoundState.LABELING:
            assert round_step(round_id=rnd.pk) is not None
            rnd.refresh_from_db()
    return rnd


def _label_all(annotator, campaign) -> int:
    done = 0
    while True:
        try:
            lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        except NothingToLabel:
            return done
        label_submit(
            annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key=f"k{lease.pk}"
        )
        done += 1


def test_a_human_round_waits_for_its_labels_then_learns(researcher, annotator):
    campaign = live_campaign(researcher, name="human", algorithm="online", feedback_mode="human")
    campaign_add_member(campaign=campaign, user=annotator)
    campaign_set_state(campaign=campaign, action="start")
    rnd = _to_labeling(campaign)
    assert round_try_close(round_id=rnd.pk) == RoundState.LABELING  # nothing labeled yet
    assert _label_all(annotator, campaign) == campaign.prompts_per_round
    with dispatch.inline():
        assert round_try_close(round_id=rnd.pk) == RoundState.LEARNING
    rnd.refresh_from_db()
    assert rnd.leftovers == 0


def test_a_human_round_closes_at_its_deadline_with_leftovers(researcher, annotator):
    campaign = live_campaign(researcher, name="late", algorithm="online", feedback_mode="human")
    campaign_add_member(campaign=campaign, user=annotator)
    campaign_set_state(campaign=campaign, action="start")
    rnd = _to_labeling(campaign)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="one")
    Round.objects.filter(pk=rnd.pk).update(deadline=timezone.now() - dt.timedelta(seconds=1))
    with dispatch.inline():
        assert round_try_close(round_id=rnd.pk) == RoundState.LEARNING
    rnd.refresh_from_db()
    assert rnd.leftovers == campaign.prompts_per_round - 1
    assert (
        Comparison.objects.filter(round=rnd, state=ComparisonState.EXPIRED).count() == rnd.leftovers
    )


def test_mixed_feedback_sends_a_share_to_both_the_judge_and_humans(researcher, annotator):
    campaign = live_campaign(
        researcher,
        name="mixed",
        algorithm="online",
        feedback_mode="mixed",
        mixed_fraction=0.5,
        prompts_per_round=6,
    )
    campaign_add_member(campaign=campaign, user=annotator)
    campaign_set_state(campaign=campaign, action="start")
    rnd = _to_labeling(campaign)
    comparisons = Comparison.objects.filter(round=rnd)
    both = comparisons.filter(judge_requested=True)
    assert 0 < both.count() < comparisons.count()
    assert all(c.labels_required == 1 for c in comparisons)  # every one goes to humans
    with dispatch.inline():
        round_judge(round_id=rnd.pk)
        assert round_try_close(round_id=rnd.pk) == RoundState.LABELING  # humans still owe labels
    assert Label.objects.filter(source="judge").count() == both.count()
    assert _label_all(annotator, campaign) == comparisons.count()
    with dispatch.inline():
        assert round_try_close(round_id=rnd.pk) == RoundState.LEARNING
    for c in both:
        assert set(c.labels.values_list("source", flat=True)) == {"judge", "human"}


class AlwaysInvalid:
    judge_id = "broken-judge"

    def judge(self, queries, *, seed=None):
        return [JudgeResult.invalid("not JSON: 'I think A'") for _ in queries]


def test_invalid_judge_answers_are_recorded_never_counted_then_sent_to_humans(
    researcher, annotator, monkeypatch, settings
):
    settings.JUDGE_MAX_ATTEMPTS = 2
    monkeypatch.setattr(
        "rlhf_platform.rounds.judge.build_judge", lambda config, **kwargs: AlwaysInvalid()
    )
    campaign = live_campaign(
        researcher, name="bad-judge", algorithm="online", feedback_mode="judge"
    )
    campaign_add_member(campaign=campaign, user=annotator)
    campaign_set_state(campaign=campaign, action="start")
    rnd = _to_labeling(campaign)
    with dispatch.inline():
        assert round_judge(round_id=rnd.pk) == campaign.prompts_per_round  # all wait for a retry
        assert round_judge(round_id=rnd.pk) == 0  # second failure: handed to humans
    assert not Label.objects.exists()
    assert JudgeCall.objects.filter(valid=False).count() == 2 * campaign.prompts_per_round
    assert Budget.objects.get(campaign=campaign).labels_spent == 0
    assert _label_all(annotator, campaign) == campaign.prompts_per_round
