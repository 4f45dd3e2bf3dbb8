"""The pages on a campaign run by the real round engine (tiny model, oracle judge)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.insights import selectors
from rlhf_platform.rounds.services import campaign_run_inline
from tests.rlhf_platform.rounds.conftest import live_campaign

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


def test_pages_read_what_the_engine_wrote(client, researcher):
    campaign = live_campaign(researcher, name="Live", rounds=2)
    campaign_set_state(campaign=campaign, action="start")
    campaign_run_inline(campaign_id=campaign.pk, rounds=2)
    series = selectors.win_rate_series(campaign)
    assert [p.labels for p in series] == [4, 8]
    assert all(p.ci_low <= p.win_rate <= p.ci_high for p in series)
    timeline = selectors.rounds_timeline(campaign)
    assert [r.index for r in timeline] == [0, 1]
    assert {s.state for s in timeline[0].segments} >= {"generating", "selecting", "labeling"}
    scores = selectors.acquisition_scores(campaign)
    assert sum(len(g.scores) for g in scores) == 8  # 4 prompts a round, 2 rounds
    accuracy = selectors.reward_accuracy(campaign)
    assert accuracy and accuracy[0].labels > 0  # round 1 was chosen by round 0's version

    client.force_login(researcher)
    html = client.get(reverse("insights:campaign", args=[campaign.pk])).content.decode()
    assert 'data-chart="rounds" data-points="0"' not in html
    assert 'data-chart="win-rate" data-points="2"' in html
    assert 'data-chart="acquisition-scores" data-points="8"' in html
    export = client.get(f"/api/v1/campaigns/{campaign.pk}/exports/labels/")
    body = b"".join(export.streaming_content)
    assert export.status_code == 200 and len(body.splitlines()) == 8
