"""The periodic sweep recovers rounds whose work message was lost (found by bench/soak).

A judge round whose ``rounds.judge`` message is lost (Redis restarted empty, or the worker
was killed between committing the move to labeling and sending the message) used to wait
in labeling until its deadline, an hour by default, with nobody on it.
"""

from __future__ import annotations

import pytest

from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.labeling.models import Label
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.services import (
    campaign_open_round,
    round_judge,
    round_step,
    rounds_sweep,
)
from tests.rlhf_platform.rounds.conftest import live_campaign

pytestmark = pytest.mark.django_db


def _labeling_round_whose_judge_message_was_lost(researcher) -> Round:
    campaign = live_campaign(researcher, name="lost judge", algorithm="online")
    campaign_set_state(campaign=campaign, action="start")
    with dispatch.inline():  # whatever is dispatched here is dropped: the lost messages
        rnd = campaign_open_round(campaign_id=campaign.pk)
        while rnd.state != RoundState.LABELING:
            assert round_step(round_id=rnd.pk) is not None
            rnd.refresh_from_db()
    return rnd


def test_the_sweep_resends_the_judge_of_an_idle_labeling_round(
    researcher, django_capture_on_commit_callbacks
):
    rnd = _labeling_round_whose_judge_message_was_lost(researcher)
    with dispatch.inline() as pop:
        with django_capture_on_commit_callbacks(execute=True):
            assert rounds_sweep(idle_seconds=3600)["judge_redispatched"] == 0  # not idle long
        assert pop() is None
        with django_capture_on_commit_callbacks(execute=True):
            assert rounds_sweep(idle_seconds=0)["judge_redispatched"] == 1
        assert pop() == ("judge", rnd.pk)
        assert round_judge(round_id=rnd.pk) == 0
    rnd.refresh_from_db()
    assert rnd.state == RoundState.LEARNING
    assert Label.objects.filter(comparison__round=rnd).count() == rnd.campaign.prompts_per_round


def test_a_resent_judge_running_twice_labels_each_comparison_once(researcher):
    rnd = _labeling_round_whose_judge_message_was_lost(researcher)
    with dispatch.inline():
        round_judge(round_id=rnd.pk)
        Round.objects.filter(pk=rnd.pk).update(state=RoundState.LABELING)  # as if still open
        round_judge(round_id=rnd.pk)  # the resent message: nothing left to judge, no error
    labels = Label.objects.filter(comparison__round=rnd)
    assert labels.count() == len(set(labels.values_list("comparison_id", flat=True)))
