"""Rounds run in-process (no worker): each algorithm, judge feedback, tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from rlhf_platform.campaigns.models import CampaignState
from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.labeling.models import Label
from rlhf_platform.rounds.models import Evaluation, ModelVersion, RoundState
from rlhf_platform.rounds.services import campaign_run_inline
from tests.rlhf_platform.rounds.conftest import live_campaign

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("algorithm", ["offline", "periodic", "online", "infomax"])
def test_a_judge_campaign_runs_three_rounds(researcher, algorithm):
    campaign = live_campaign(researcher, name=algorithm, algorithm=algorithm)
    campaign_set_state(campaign=campaign, action="start")
    rounds = campaign_run_inline(campaign_id=campaign.pk, rounds=3)
    assert [r.state for r in rounds] == [RoundState.DONE] * 3, [r.failure_reason for r in rounds]
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.FINISHED
    labels = Label.objects.filter(campaign=campaign)
    assert labels.count() == 12  # 3 rounds x 4 prompts, one judge label each
    for label in labels:
        assert label.comparison.round.campaign_id == campaign.pk
    for version in ModelVersion.objects.filter(campaign=campaign):
        assert (Path(settings.ARTIFACT_ROOT) / version.artifact_path).is_dir()
        assert version.state == "ready"
    learned = ModelVersion.objects.filter(campaign=campaign, round__isnull=False)
    if algorithm in ("online", "infomax"):
        assert learned.count() == 6  # a reward and a policy version per round
    elif algorithm == "periodic":
        assert sorted(learned.values_list("round__index", flat=True)) == [1, 1, 2, 2]  # tau=2, last
    else:
        assert sorted(learned.values_list("round__index", flat=True)) == [2, 2]  # once, at the end
    evaluations = Evaluation.objects.filter(campaign=campaign).order_by("labels_spent")
    assert [e.labels_spent for e in evaluations] == [4, 8, 12]
    assert all(0.0 <= e.win_rate <= 1.0 for e in evaluations)
    assert campaign.active_policy_version.round.index == 2 if algorithm != "periodic" else True
